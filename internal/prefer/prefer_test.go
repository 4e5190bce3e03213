package prefer

import (
	"strings"
	"testing"
)

func TestHas(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  bool
	}{
		{[]string{"processing"}, true},
		{[]string{"Processing"}, true},
		{[]string{"respond-async, processing"}, true},
		{[]string{"wait=10", "processing; foo=bar"}, true},
		{[]string{" processing=1 "}, true},
		{[]string{"processing-later"}, false},
		{[]string{"respond-async"}, false},
		{[]string{""}, false},
		{nil, false},
		// One preference whose quoted value holds the word: not the
		// preference itself.
		{[]string{`foo="x, processing, y"`}, false},
		// A malformed line counts as absent as a whole; the others count.
		{[]string{"processing wait=1"}, false},
		{[]string{"processing wait=1", "processing"}, true},
	} {
		if got := Has(tc.lines, "processing"); got != tc.want {
			t.Errorf("Has(%q, processing) = %v, want %v", tc.lines, got, tc.want)
		}
	}
}

func TestParseKeepsTheFirstOfARepeatedPreference(t *testing.T) {
	got := Parse([]string{`wait=1, Wait=9; a="b\"c"`, "return=minimal"})
	want := []Preference{{"wait", "1"}, {"return", "minimal"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"respond-async, wait=10", "wait=\"1\";a;b=\"c\\\"d\"", ",,", "a=b;c=", "x\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		prefs := Parse([]string{s})
		seen := map[string]bool{}
		for _, p := range prefs {
			if p.Name == "" || p.Name != strings.ToLower(p.Name) || seen[p.Name] {
				t.Fatalf("%q gave preference %+v in %+v", s, p, prefs)
			}
			seen[p.Name] = true
			for i := 0; i < len(p.Name); i++ {
				if !isTokenChar(p.Name[i]) {
					t.Fatalf("%q gave a name with %q", s, p.Name[i])
				}
			}
		}
		// Without takes out exactly the named preferences: what is left
		// parses to the others, in order, with their values.
		rest := Parse(Without([]string{s}, "respond-async", "wait"))
		var want []Preference
		if _, ok := parseLine(s); ok {
			for _, p := range prefs {
				if p.Name != "respond-async" && p.Name != "wait" {
					want = append(want, p)
				}
			}
		} else {
			want = prefs // nil: a malformed line is kept as written, still malformed
		}
		if len(rest) != len(want) {
			t.Fatalf("Without(%q) parses to %+v, want %+v", s, rest, want)
		}
		for i := range want {
			if rest[i] != want[i] {
				t.Fatalf("Without(%q) parses to %+v, want %+v", s, rest, want)
			}
		}
	})
}

func TestWithoutKeepsWhatWasNotApplied(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  []string
	}{
		{[]string{"respond-async, return=minimal, handling=lenient"}, []string{"return=minimal, handling=lenient"}},
		{[]string{"respond-async, wait=10"}, nil},
		{[]string{"Respond-Async;x=1, return=minimal; a=\"b, c\" ;", "wait=5"}, []string{"return=minimal; a=\"b, c\" ;"}},
		{[]string{"respond-async", "return=minimal"}, []string{"return=minimal"}},
		// A malformed line was not applied: it goes on whole.
		{[]string{"respond-async wait=1", "respond-async, processing"}, []string{"respond-async wait=1", "processing"}},
		{[]string{",, foo ,"}, []string{"foo"}},
		{nil, nil},
	} {
		got := Without(tc.lines, "respond-async", "wait")
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || (got == nil) != (tc.want == nil) {
			t.Errorf("Without(%q) = %q, want %q", tc.lines, got, tc.want)
		}
	}
}
