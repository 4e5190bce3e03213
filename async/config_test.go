package async_test

// The async block's configuration: every bad form is refused at load with
// the Caddyfile line and what was expected; JSON the same with the field;
// good forms give the stated defaults.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestAsyncBadCaddyfileNamesLineAndExpectation(t *testing.T) {
	block := func(lines ...string) string {
		return "\tprocessing {\n\t\tasync {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n"
	}
	cases := []struct {
		name string
		body string
		line int
		want string
	}{
		{"unknown subdirective", block("wait 1s", "linger 5s"), 5, `unrecognized async subdirective "linger"; expected wait, monitor, keep, refresh, timeout, upload_timeout, max_body, max_result, max_jobs, max_stored or bind`},
		{"wait without value", block("wait"), 4, `async: wait: expected a duration such as 2s`},
		{"wait not a duration", block("wait soon"), 4, `async: wait: expected a duration such as 20s, got "soon"`},
		{"zero wait", block("wait 0s"), 4, `async: wait: must be a positive duration, got "0s"`},
		{"negative keep", block("keep -1h"), 4, `async: keep: must be a positive duration, got "-1h"`},
		{"zero refresh", block("refresh 0"), 4, `async: refresh: must be a positive duration, got "0"`},
		{"timeout not a duration", block("wait 1s", "timeout an hour"), 5, `async: timeout: expected a duration such as 20s, got "an"`},
		{"zero timeout", block("timeout 0s"), 4, `async: timeout: must be a positive duration, got "0s"`},
		{"timeout without value", block("timeout"), 4, `async: timeout: expected a duration such as 2s`},
		{"relative monitor", block("monitor jobs"), 4, `async: monitor: must be a path starting with /, got "jobs"`},
		{"monitor with placeholder", block("monitor /{host}/jobs"), 4, `async: monitor: must be a plain path without placeholders`},
		{"monitor with dot segment", block("monitor /a/../jobs"), 4, `async: monitor: must be a clean path, got "/a/../jobs"`},
		{"monitor root", block("monitor /"), 4, `async: monitor: must not be the whole site, got "/"`},
		{"max_body not a size", block("max_body lots"), 4, `async: max_body: expected a positive size such as 16MiB, got "lots"`},
		{"max_body zero", block("max_body 0"), 4, `async: max_body: expected a positive size such as 16MiB, got "0"`},
		{"max_result negative", block("max_result -1MiB"), 4, `async: max_result: expected a positive size such as 16MiB, got "-1MiB"`},
		{"max_stored without value", block("max_stored"), 4, `async: max_stored: expected a positive size such as 16MiB`},
		{"max_jobs zero", block("max_jobs 0"), 4, `async: max_jobs: expected a positive count such as 1000, got "0"`},
		{"max_jobs not whole", block("max_jobs 2.5"), 4, `async: max_jobs: expected a positive count such as 1000, got "2.5"`},
		{"bind without value", block("bind"), 4, `async: bind: expected one or more placeholders such as {http.request.cookie.session}`},
		{"bind a constant", block("bind {http.request.cookie.session} session"), 4, `async: bind: expected placeholders such as {http.request.cookie.session}, got "session"`},
		{"extra argument", block("keep 1h 2h"), 4, `async: keep: unexpected argument "2h"`},
		{"given twice", block("wait 1s", "keep 1h", "wait 2s"), 6, `async: wait: already given`},
		{"argument to async", "\tprocessing {\n\t\tasync 5s\n\t}\n", 3, `async: unexpected argument "5s"; expected a block`},
		{"two async blocks", "\tprocessing {\n\t\tasync {\n\t\t}\n\t\tasync {\n\t\t}\n\t}\n", 5, `async: already given`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { harness.CheckRefusedAt(t, tc.body, tc.line, tc.want) })
	}
}

func TestAsyncCaddyfileAndDefaults(t *testing.T) {
	text := harness.GlobalOptions(t) + `http://127.0.0.1:8080 {
	processing {
		async {
			wait 3s
			monitor /jobs/
			keep 10m
			refresh 1s
			timeout 90s
			max_body 1MiB
			max_result 2MB
			max_jobs 7
			max_stored 1GiB
		}
	}
	respond ok
}
http://127.0.0.1:8081 {
	processing {
		async {
		}
	}
	respond ok
}
`
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Handle []json.RawMessage `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &parsed); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, srv := range parsed.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				for _, sub := range h.Routes {
					for _, raw := range sub.Handle {
						if strings.Contains(string(raw), `"processing"`) {
							got[srv.Listen[0]] = string(raw)
						}
					}
				}
			}
		}
	}
	wantFull := `{"async":{"keep":600000000000,"max_body":1048576,"max_jobs":7,"max_result":2000000,"max_stored":1073741824,"monitor":"/jobs/","refresh":1000000000,"timeout":90000000000,"wait":3000000000},"handler":"processing"}`
	if got[":8080"] != wantFull {
		t.Errorf("adapted handler:\n%s\nwant\n%s", got[":8080"], wantFull)
	}
	if want := `{"async":{},"handler":"processing"}`; got[":8081"] != want {
		t.Errorf("adapted empty async:\n%s\nwant\n%s", got[":8081"], want)
	}
	if err := harness.ValidateJSONConfig(t, cfg); err != nil {
		t.Fatalf("does not validate: %v", err)
	}
}

func TestAsyncBadJSONConfig(t *testing.T) {
	cases := []struct {
		name   string
		fields string
		want   []string
	}{
		{"negative wait", `"async": {"wait": "-1s"}`, []string{"async: wait must be a positive duration, got -1s"}},
		{"negative keep", `"async": {"keep": -5}`, []string{"async: keep must be a positive duration"}},
		{"negative timeout", `"async": {"timeout": "-1m"}`, []string{"async: timeout must be a positive duration, got -1m0s"}},
		{"negative max_jobs", `"async": {"max_jobs": -1}`, []string{"async: max_jobs must be positive, got -1"}},
		{"negative max_body", `"async": {"max_body": -1}`, []string{"async: max_body must be positive, got -1"}},
		{"relative monitor", `"async": {"monitor": "jobs"}`, []string{`async: monitor: must be a path starting with /, got "jobs"`}},
		{"unknown field", `"async": {"wiat": "1s"}`, []string{"http.handlers.processing", `unknown field "wiat"`}},
		{"size as string", `"async": {"max_body": "16MiB"}`, []string{"http.handlers.processing", "max_body", "int64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := harness.ValidateJSONConfig(t, harness.JSONConfigWithHandler(t, tc.fields))
			if err == nil {
				t.Fatalf("accepted handler {%s}", tc.fields)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
}
