package processing

import (
	"fmt"
	"testing"
	"time"
)

func TestSmokeInterimsOverRawHTTP11(t *testing.T) {
	setBehaviour(t, "slow", sleepThen(550*time.Millisecond, "done"))
	port, _ := startCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 100ms
	test_work slow
}
`)
	res := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", port), "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	t.Logf("%s", res.Wire)
	if res.Status != 200 || string(res.Body) != "done" || len(res.Interims) < 3 {
		t.Fatalf("got %d %q with %d interims", res.Status, res.Body, len(res.Interims))
	}
}
