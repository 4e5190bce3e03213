// Package progress validates the Progress header field of
// draft-wright-http-progress ("Reporting Progress of Long-Running Operations
// in HTTP", https://github.com/awwright/http-progress), which both halves of
// the module carry on their 102s and async mode keeps in a job's status
// document. A value this package refuses is ignored by the module: it is
// neither forwarded on the module's own 102s nor stored.
package progress

import "strings"

// FieldName is the field's canonical name.
const FieldName = "Progress"

// MaxLen bounds a value the module keeps: it is stored in every job record
// and sent on every 102, and a fraction with a remark or two fits easily.
const MaxLen = 1024

// Valid reports whether v is a Progress field value by the draft's grammar
// (section "The Progress header"):
//
//	Progress        = fraction *( WS progress-remark )
//	progress-remark = fraction / comment / quoted-string / ext-value
//	fraction        = 1*DIGIT "/" [ 1*DIGIT ]
//	comment         = <comment, RFC 9110 §5.6.5>
//	quoted-string   = <quoted-string, RFC 9110 §5.6.4>
//	ext-value       = <ext-value, RFC 8187 §3.2.1>
//
// WS is read as RWS, one or more spaces or tabs (RFC 9110 §5.6.3), with none
// before the first fraction nor after the last remark (Go's and quic-go's
// header parsers trim those, RFC 9110 §5.5). It also refuses what the draft
// forbids in one value: a fraction whose denominator is smaller than its
// numerator ("If specified, the denominator MUST NOT be smaller than the
// numerator"). Values longer than MaxLen are refused.
func Valid(v string) bool {
	if len(v) == 0 || len(v) > MaxLen {
		return false
	}
	i, ok := fraction(v, 0)
	if !ok {
		return false
	}
	for i < len(v) {
		j := i
		for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
			j++
		}
		if j == i || j == len(v) {
			return false // no RWS, or trailing whitespace
		}
		if i, ok = remark(v, j); !ok {
			return false
		}
	}
	return true
}

// Of returns the single valid Progress value of a header, if it has one.
// More than one field line is refused as a whole: the grammar is not a list,
// so a recipient cannot tell which line the sender meant.
func Of(lines []string) (string, bool) {
	if len(lines) != 1 || !Valid(lines[0]) {
		return "", false
	}
	return lines[0], true
}

func remark(v string, i int) (int, bool) {
	switch c := v[i]; {
	case c >= '0' && c <= '9':
		return fraction(v, i)
	case c == '(':
		return comment(v, i, 0)
	case c == '"':
		return quotedString(v, i)
	default:
		return extValue(v, i)
	}
}

// fraction reads 1*DIGIT "/" [ 1*DIGIT ] at i.
func fraction(v string, i int) (int, bool) {
	num, i := digits(v, i)
	if num == "" || i == len(v) || v[i] != '/' {
		return i, false
	}
	den, i := digits(v, i+1)
	if den != "" && less(den, num) {
		return i, false
	}
	return i, true
}

func digits(v string, i int) (string, int) {
	j := i
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	return v[i:j], j
}

// less compares two decimal numbers of any length.
func less(a, b string) bool {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// maxCommentDepth bounds nested comments, so that a hostile value cannot
// make the parser recurse deeply (MaxLen bounds it anyway).
const maxCommentDepth = 8

// comment reads "(" *( ctext / quoted-pair / comment ) ")" at i.
func comment(v string, i, depth int) (int, bool) {
	if depth > maxCommentDepth {
		return i, false
	}
	i++ // "("
	for i < len(v) {
		switch c := v[i]; {
		case c == ')':
			return i + 1, true
		case c == '(':
			var ok bool
			if i, ok = comment(v, i, depth+1); !ok {
				return i, false
			}
		case c == '\\':
			if i+1 == len(v) || !quotable(v[i+1]) {
				return i, false
			}
			i += 2
		case ctext(c):
			i++
		default:
			return i, false
		}
	}
	return i, false
}

// quotedString reads DQUOTE *( qdtext / quoted-pair ) DQUOTE at i.
func quotedString(v string, i int) (int, bool) {
	i++
	for i < len(v) {
		switch c := v[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 == len(v) || !quotable(v[i+1]) {
				return i, false
			}
			i += 2
		case qdtext(c):
			i++
		default:
			return i, false
		}
	}
	return i, false
}

// extValue reads charset "'" [ language ] "'" value-chars (RFC 8187 §3.2.1)
// at i. The language is checked for the characters a Language-Tag (RFC 5646)
// is made of, not for its full grammar.
func extValue(v string, i int) (int, bool) {
	j := i
	for j < len(v) && mimeCharsetc(v[j]) {
		j++
	}
	if j == i || j == len(v) || v[j] != '\'' {
		return j, false
	}
	j++
	for j < len(v) && (alpha(v[j]) || digit(v[j]) || v[j] == '-') {
		j++
	}
	if j == len(v) || v[j] != '\'' {
		return j, false
	}
	j++
	for j < len(v) {
		switch c := v[j]; {
		case c == '%':
			if j+2 >= len(v) || !hexdig(v[j+1]) || !hexdig(v[j+2]) {
				return j, false
			}
			j += 3
		case attrChar(c):
			j++
		default:
			return j, true // the end of the remark; the caller checks what follows
		}
	}
	return j, true
}

func alpha(c byte) bool  { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func digit(c byte) bool  { return c >= '0' && c <= '9' }
func hexdig(c byte) bool { return digit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
func vchar(c byte) bool  { return c >= 0x21 && c <= 0x7e }

// obsText is RFC 9110's obs-text, allowed in quoted strings and comments.
func obsText(c byte) bool { return c >= 0x80 }

func quotable(c byte) bool { return c == '\t' || c == ' ' || vchar(c) || obsText(c) }

func qdtext(c byte) bool {
	return c == '\t' || c == ' ' || c == 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e || obsText(c)
}

func ctext(c byte) bool {
	return c == '\t' || c == ' ' || c >= 0x21 && c <= 0x27 || c >= 0x2a && c <= 0x5b || c >= 0x5d && c <= 0x7e || obsText(c)
}

func mimeCharsetc(c byte) bool {
	return alpha(c) || digit(c) || strings.IndexByte("!#$%&+-^_`{}~", c) >= 0
}

func attrChar(c byte) bool {
	return alpha(c) || digit(c) || strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
