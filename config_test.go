package processing

// Bad configuration, as a suite: every invalid form of the Caddyfile
// directive and of the JSON config is refused with an error that says where
// (the Caddyfile line) and what was expected, so that a user reading only
// the error can fix the config.

import (
	"strings"
	"testing"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestBadCaddyfileNamesLineAndExpectation(t *testing.T) {
	// Each body is what follows the site address line (line 1) of the
	// Caddyfile; line is where the error must point.
	cases := []struct {
		name string
		body string
		line int
		want string
	}{
		{"zero interval argument", "\tprocessing 0s\n", 2, `interval: must be a positive duration, got "0s"`},
		{"zero interval without unit", "\tprocessing 0\n", 2, `interval: must be a positive duration, got "0"`},
		{"negative interval argument", "\tprocessing -1s\n", 2, `interval: must be a positive duration, got "-1s"`},
		{"zero interval in block", "\tprocessing {\n\t\tinterval 0ms\n\t}\n", 3, `interval: must be a positive duration, got "0ms"`},
		{"negative delay", "\tprocessing {\n\t\tdelay -5s\n\t}\n", 3, `delay: must be a positive duration, got "-5s"`},
		{"zero delay", "\tprocessing {\n\t\tmax 3\n\t\tdelay 0s\n\t}\n", 4, `delay: must be a positive duration, got "0s"`},
		{"unparsable interval argument", "\tprocessing soon\n", 2, `interval: expected a duration such as 20s, got "soon"`},
		{"unparsable interval in block", "\tprocessing {\n\t\tinterval 5parsecs\n\t}\n", 3, `interval: expected a duration such as 20s, got "5parsecs"`},
		{"unparsable delay", "\tprocessing {\n\t\tdelay 1x\n\t}\n", 3, `delay: expected a duration such as 20s, got "1x"`},
		{"interval without value", "\tprocessing {\n\t\tinterval\n\t}\n", 3, `interval: expected a duration such as 20s`},
		{"delay without value", "\tprocessing {\n\t\tdelay\n\t}\n", 3, `delay: expected a duration such as 20s`},
		{"max below zero", "\tprocessing {\n\t\tmax -1\n\t}\n", 3, `max: expected a count of 0 (no limit) or more, got "-1"`},
		{"max not a number", "\tprocessing {\n\t\tmax many\n\t}\n", 3, `max: expected a count of 0 (no limit) or more, got "many"`},
		{"max without value", "\tprocessing {\n\t\tmax\n\t}\n", 3, `max: expected a count (0 for no limit)`},
		{"unknown subdirective", "\tprocessing {\n\t\tdelay 1s\n\t\tfrobnicate 1\n\t}\n", 4, `unrecognized processing subdirective "frobnicate"; expected delay, interval, max, opt_in, header or async`},
		{"header without value", "\tprocessing {\n\t\theader X-Progress\n\t}\n", 3, `header: expected a field name and one value, got 1 arguments`},
		{"header without anything", "\tprocessing {\n\t\theader\n\t}\n", 3, `header: expected a field name and one value, got 0 arguments`},
		{"header with two values", "\tprocessing {\n\t\theader X-Progress a b\n\t}\n", 3, `header: expected a field name and one value, got 3 arguments`},
		{"header with bad field name", "\tprocessing {\n\t\theader \"X Progress\" a\n\t}\n", 3, `header: "X Progress" is not a valid header field name`},
		{"header that frames content", "\tprocessing {\n\t\theader Content-Length 5\n\t}\n", 3, `header: Content-Length may not be sent on an interim response`},
		{"header that is hop-by-hop", "\tprocessing {\n\t\theader Connection close\n\t}\n", 3, `header: Connection may not be sent on an interim response`},
		{"two interval arguments", "\tprocessing 1s 2s\n", 2, `unexpected argument "2s": processing takes at most one argument, the interval`},
		{"extra argument to delay", "\tprocessing {\n\t\tdelay 1s 2s\n\t}\n", 3, `delay: unexpected argument "2s"`},
		{"extra argument to max", "\tprocessing {\n\t\tmax 3 4\n\t}\n", 3, `max: unexpected argument "4"`},
		{"argument to opt_in", "\tprocessing {\n\t\topt_in yes\n\t}\n", 3, `opt_in: unexpected argument "yes"`},
		{"interval as argument and in block", "\tprocessing 1s {\n\t\tinterval 2s\n\t}\n", 3, `interval: already given`},
		{"duplicate interval in block", "\tprocessing {\n\t\tinterval 1s\n\t\tinterval 2s\n\t}\n", 4, `interval: already given`},
		{"duplicate delay in block", "\tprocessing {\n\t\tdelay 1s\n\t\tmax 2\n\t\tdelay 2s\n\t}\n", 5, `delay: already given`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { harness.CheckRefusedAt(t, tc.body, tc.line, tc.want) })
	}
}

// TestGoodCaddyfileForms keeps the suite above honest: the same shapes with
// valid values are accepted, so each failure above is about its one fault.
func TestGoodCaddyfileForms(t *testing.T) {
	for _, body := range []string{
		"\tprocessing\n",
		"\tprocessing 1ms\n",
		"\tprocessing 1s {\n\t\tdelay 2s\n\t\tmax 0\n\t\topt_in\n\t\theader X-Progress \"{http.processing.count}\"\n\t\theader X-Progress again\n\t}\n",
		"\tprocessing {\n\t\tinterval 1d\n\t\tmax 5\n\t}\n",
	} {
		text := harness.GlobalOptions(t) + "http://127.0.0.1:8080 {\n" + body + "\trespond ok\n}\n"
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			t.Errorf("refused %q: %v", body, err)
			continue
		}
		if err := harness.ValidateJSONConfig(t, cfg); err != nil {
			t.Errorf("adapted config of %q does not validate: %v", body, err)
		}
	}
}

func TestBadJSONConfigNamesFieldAndExpectation(t *testing.T) {
	cases := []struct {
		name    string
		handler string // fields of the handler object besides "handler"
		want    []string
	}{
		{"negative interval", `"interval": -1000000000`, []string{"interval must be a positive duration, got -1s"}},
		{"negative interval string", `"interval": "-2s"`, []string{"interval must be a positive duration, got -2s"}},
		{"negative delay", `"delay": "-5ms"`, []string{"delay must be a positive duration, got -5ms"}},
		{"unparsable interval", `"interval": "soon"`, []string{"http.handlers.processing", `"soon"`}},
		{"interval of wrong type", `"interval": true`, []string{"http.handlers.processing", "bool"}},
		{"max below zero", `"max": -1`, []string{"max must be 0 (no limit) or more, got -1"}},
		{"max of wrong type", `"max": "3"`, []string{"http.handlers.processing", "max", "int"}},
		{"max not whole", `"max": 2.5`, []string{"http.handlers.processing", "max", "int"}},
		{"unknown field", `"intervall": "1s"`, []string{"http.handlers.processing", `unknown field "intervall"`}},
		{"header without value", `"header": {"X-Progress": []}`, []string{"header: field X-Progress has no value"}},
		{"header value not a list", `"header": {"X-Progress": "1"}`, []string{"http.handlers.processing", "header", "[]string"}},
		{"header with bad field name", `"header": {"X Progress": ["a"]}`, []string{`header: "X Progress" is not a valid header field name`}},
		{"header that frames content", `"header": {"transfer-encoding": ["chunked"]}`, []string{"header: transfer-encoding may not be sent on an interim response"}},
		{"header value with a line break", `"header": {"X-Progress": ["a\r\nX-Injected: 1"]}`, []string{`header: value "a\r\nX-Injected: 1" of field X-Progress holds a control character`}},
		{"opt_in of wrong type", `"opt_in": "yes"`, []string{"http.handlers.processing", "opt_in", "bool"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := harness.ValidateJSONConfig(t, harness.JSONConfigWithHandler(t, tc.handler))
			if err == nil {
				t.Fatalf("accepted handler {%s}", tc.handler)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
}
