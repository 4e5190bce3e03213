package processing

import (
	"github.com/c055b0d7/caddy-processing/async"
	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("processing", parseCaddyfile)
	// After forward_auth, the last of the standard directives that
	// authenticate (basic_auth, forward_auth): a request they refuse never
	// reaches processing, so async mode buffers no body, creates no job
	// and serves no monitor answer for it. Still before request_header,
	// encode and every handler that writes a response (reverse_proxy,
	// php_fastcgi, file_server, a webdav ordered before file_server), and
	// after map, vars and root, so the directive's matcher can use what
	// they set. header now runs before processing: its immediate
	// operations are moved out of each 102 like the server's own fields
	// (fields.go), and its deferred operations never see a 102, which
	// goes to net/http's own writer past header's wrapper (innermost).
	// encode stays inside, where it never sees a 102 either.
	httpcaddyfile.RegisterDirectiveOrder("processing", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Handler)
	err := p.UnmarshalCaddyfile(h.Dispenser)
	return p, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	processing [<matcher>] [<interval>] {
//		delay    <duration>
//		interval <duration>
//		max      <count>
//		opt_in
//		header   <field> <value>
//		async {
//			wait       <duration>
//			monitor    <path>
//			keep       <duration>
//			refresh    <duration>
//			upload_timeout <duration>
//			max_body   <size>
//			max_result <size>
//			max_jobs   <count>
//			max_stored <size>
//			bind       <placeholder>...
//		}
//	}
//
// The interval may be given as the argument or in the block, not both.
// `header` may be repeated; a field given twice gets both values.
func (p *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name

	if d.NextArg() {
		dur, err := caddyutil.ParseDuration(d, "interval")
		if err != nil {
			return err
		}
		p.Interval = dur
		if d.NextArg() {
			return d.Errf("unexpected argument %q: processing takes at most one argument, the interval", d.Val())
		}
	}

	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "interval", "delay":
			if !d.NextArg() {
				return d.Errf("%s: expected a duration such as 20s", sub)
			}
			dur, err := caddyutil.ParseDuration(d, sub)
			if err != nil {
				return err
			}
			if sub == "interval" {
				if p.Interval != 0 {
					return d.Err("interval: already given")
				}
				p.Interval = dur
			} else {
				if p.Delay != 0 {
					return d.Err("delay: already given")
				}
				p.Delay = dur
			}
		case "max":
			if !d.NextArg() {
				return d.Err("max: expected a count (0 for no limit)")
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("max: expected a count of 0 (no limit) or more, got %q", d.Val())
			}
			p.Max = n
		case "opt_in":
			p.OptIn = true
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("header: expected a field name and one value, got %d arguments", len(args))
			}
			if err := validateHeaderField(args[0], args[1:]); err != nil {
				return d.Err(err.Error())
			}
			if p.Header == nil {
				p.Header = make(http.Header)
			}
			p.Header.Add(args[0], args[1])
			continue
		case "async":
			if p.Async != nil {
				return d.Err("async: already given")
			}
			if d.NextArg() {
				return d.Errf("async: unexpected argument %q; expected a block", d.Val())
			}
			p.Async = new(async.Config)
			if err := p.Async.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			continue
		default:
			return d.Errf("unrecognized processing subdirective %q; expected delay, interval, max, opt_in, header or async", sub)
		}
		if d.NextArg() {
			return d.Errf("%s: unexpected argument %q", sub, d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
