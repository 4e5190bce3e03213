package progress

import "testing"

// TestValid takes its accepted values from the draft's own examples.
func TestValid(t *testing.T) {
	for _, v := range []string{
		"0/1",
		"66/ (tries) utf-8'en'Generating%20prime%20number",
		"5/16 UTF-8'ja-JP'%e9%a3%9f%e3%81%b9%e3%81%a6",
		`3/20 "POST http://example.com/item/3" 8020/8591489 (bytes)`,
		`0/3 "Herding cats"`,
		"7/",
		"0/0",
		"1/1\t(done (really) \\) )",
		`2/10 "a \"quoted\" name"`,
		"00012/12",
		"12/0000013",
		"1/2 UTF-8''plain",
	} {
		if !Valid(v) {
			t.Errorf("Valid(%q) = false, want true", v)
		}
	}
	for _, v := range []string{
		"",
		"/",
		"/3",
		"3",
		"a/3",
		"3/2",              // denominator smaller than numerator
		"10/9",             // by number, not by text
		"1/2 ",             // trailing whitespace
		" 1/2",             // leading whitespace
		"1/2  ",            // trailing whitespace
		"1/2(x)",           // no whitespace before a remark
		"1/2 \"unclosed",   // open quoted string
		"1/2 (unclosed",    // open comment
		"1/2 bare words",   // a token is no remark
		"1/2 utf-8'en'a b", // the space ends the ext-value, then "b" is no remark
		"1/2 utf-8'en'%zz",
		"1/2 \"ctl\x01\"",
		"1/2 -1/3",
		"1/-",
		"50%",
		"1/2,3/4",
	} {
		if Valid(v) {
			t.Errorf("Valid(%q) = true, want false", v)
		}
	}
	long := "1/2 \""
	for len(long) < MaxLen {
		long += "x"
	}
	if Valid(long + "\"") {
		t.Errorf("a value over MaxLen was accepted")
	}
	deep := "1/2 "
	for range 20 {
		deep += "("
	}
	for range 20 {
		deep += ")"
	}
	if Valid(deep) {
		t.Errorf("comments nested 20 deep were accepted")
	}
}

func TestOfRefusesSeveralLines(t *testing.T) {
	if v, ok := Of([]string{"1/2"}); !ok || v != "1/2" {
		t.Errorf("Of one line: %q, %v", v, ok)
	}
	if _, ok := Of([]string{"1/2", "2/2"}); ok {
		t.Errorf("Of two lines: accepted")
	}
	if _, ok := Of(nil); ok {
		t.Errorf("Of no line: accepted")
	}
}

func FuzzValid(f *testing.F) {
	f.Add(`3/20 "POST http://example.com/item/3" 8020/8591489 (bytes)`)
	f.Add("66/ (tries) utf-8'en'Generating%20prime%20number")
	f.Fuzz(func(t *testing.T, v string) {
		if Valid(v) && (v[0] < '0' || v[0] > '9' || len(v) > MaxLen) {
			t.Fatalf("accepted %q", v)
		}
	})
}
