// Package prefer parses the Prefer request header field of RFC 7240, for
// both halves of the module: the 102 core honours the preference
// "processing" (draft-wright-http-progress) and async mode honours
// "respond-async" and "wait".
package prefer

import (
	"slices"
	"strings"
)

// Preference is one preference of a Prefer header field (RFC 7240 §2):
// its name, lower-cased (names are compared case-insensitively), and its
// value with any quoting removed. Parameters are parsed for syntax and
// dropped: no preference this module honours has any.
type Preference struct {
	Name  string
	Value string
}

// Parse parses the Prefer field lines of a request by the grammar of
// RFC 7240 §2:
//
//	Prefer     = 1#preference
//	preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )
//	parameter  = token [ BWS "=" BWS word ]
//	word       = token / quoted-string
//
// A field line that does not match counts as absent, as a whole, because a
// server cannot tell which of its parts the client meant; the other lines
// still count. Empty list elements are allowed (RFC 9110 §5.6.1). When a
// preference is given more than once only the first counts (RFC 7240 §2).
func Parse(lines []string) []Preference {
	var prefs []Preference
	for _, line := range lines {
		parsed, ok := parseLine(line)
		if !ok {
			continue
		}
	next:
		for _, p := range parsed {
			for _, q := range prefs {
				if q.Name == p.Name {
					continue next
				}
			}
			prefs = append(prefs, p)
		}
	}
	return prefs
}

// parseLine parses one field line; ok is false if it is malformed.
func parseLine(s string) (prefs []Preference, ok bool) {
	prefs, _, ok = parseLineSpans(s)
	return prefs, ok
}

// span is where one preference, its parameters included, is in its line.
type span struct{ start, end int }

// parseLineSpans is parseLine that also says where each preference is.
func parseLineSpans(s string) (prefs []Preference, spans []span, ok bool) {
	i := 0
	for {
		i = skipOWS(s, i)
		if i == len(s) {
			return prefs, spans, true
		}
		if s[i] == ',' { // an empty list element
			i++
			continue
		}
		var p Preference
		var name string
		start := i
		name, i = readToken(s, i)
		if name == "" {
			return nil, nil, false
		}
		p.Name = strings.ToLower(name)
		var valid bool
		p.Value, i, valid = readOptionalValue(s, i)
		if !valid {
			return nil, nil, false
		}
		end := i
		// Parameters: *( OWS ";" [ OWS parameter ] ).
		for {
			j := skipOWS(s, i)
			if j == len(s) || s[j] != ';' {
				i = j
				break
			}
			semicolon := j
			j = skipOWS(s, j+1)
			if j < len(s) && isTokenChar(s[j]) {
				_, j = readToken(s, j)
				if _, j, valid = readOptionalValue(s, j); !valid {
					return nil, nil, false
				}
				end = j
			} else {
				end = semicolon + 1 // an empty parameter: the ";" alone
			}
			i = j
		}
		prefs = append(prefs, p)
		spans = append(spans, span{start, end})
		if i == len(s) {
			return prefs, spans, true
		}
		if s[i] != ',' {
			return nil, nil, false
		}
		i++
	}
}

// readOptionalValue reads `[ BWS "=" BWS word ]` at i.
func readOptionalValue(s string, i int) (value string, next int, ok bool) {
	j := skipOWS(s, i)
	if j == len(s) || s[j] != '=' {
		return "", i, true
	}
	j = skipOWS(s, j+1)
	if j == len(s) {
		return "", j, false
	}
	if s[j] == '"' {
		return readQuoted(s, j)
	}
	value, j = readToken(s, j)
	if value == "" {
		return "", j, false
	}
	return value, j, true
}

// readQuoted reads a quoted-string (RFC 9110 §5.6.4) starting at the quote.
func readQuoted(s string, i int) (value string, next int, ok bool) {
	var b strings.Builder
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '"':
			return b.String(), j + 1, true
		case c == '\\':
			j++
			if j == len(s) || !isQuotedPairChar(s[j]) {
				return "", j, false
			}
			b.WriteByte(s[j])
		case c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80:
			b.WriteByte(c)
		default:
			return "", j, false
		}
	}
	return "", len(s), false
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80
}

func readToken(s string, i int) (string, int) {
	j := i
	for j < len(s) && isTokenChar(s[j]) {
		j++
	}
	return s[i:j], j
}

func skipOWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// isTokenChar reports whether c is a tchar (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Has reports whether the Prefer field lines hold the preference name,
// which must be lower-case. A request without the field, the common case,
// costs nothing.
func Has(lines []string, name string) bool {
	if len(lines) == 0 {
		return false
	}
	for _, p := range Parse(lines) {
		if p.Name == name {
			return true
		}
	}
	return false
}

// Without returns the Prefer field lines with every preference named in
// names (lower-case) taken out, the others as the client wrote them, their
// parameters included: a server passes on the preferences it did not apply
// (RFC 7240 §2 lets each recipient honour or ignore each one). A line that
// does not parse is kept whole, since none of it was applied; a line left
// with no preference is dropped. It returns nil when no line is left.
func Without(lines []string, names ...string) []string {
	var out []string
	for _, line := range lines {
		prefs, spans, ok := parseLineSpans(line)
		if !ok {
			out = append(out, line)
			continue
		}
		var b strings.Builder
		for i, p := range prefs {
			if slices.Contains(names, p.Name) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(line[spans[i].start:spans[i].end])
		}
		if b.Len() > 0 {
			out = append(out, b.String())
		}
	}
	return out
}
