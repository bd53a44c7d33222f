package authz

import (
	"bytes"
	"net/url"
)

// CarriedQuery returns the credentials of q that an HLS playlist's segment
// URIs must carry (TokenParam, InternalParam), nil when q has none.
func CarriedQuery(q url.Values) url.Values {
	var out url.Values
	for _, p := range []string{TokenParam, InternalParam} {
		if v := q.Get(p); v != "" {
			if out == nil {
				out = url.Values{}
			}
			out.Set(p, v)
		}
	}
	return out
}

// RewritePlaylist appends carry to every URI line of an HLS playlist (a line
// that is neither empty nor a #tag), so players that do not pass the
// playlist's query on to segment requests still send the credential. A
// URI that already has a query gets "&...", else "?...". body is not
// modified; with nothing to carry it is returned as is.
func RewritePlaylist(body []byte, carry url.Values) []byte {
	if len(carry) == 0 {
		return body
	}
	enc := carry.Encode()
	var out bytes.Buffer
	out.Grow(len(body) + 64*len(enc)/8)
	for len(body) > 0 {
		line := body
		rest := []byte(nil)
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, rest = body[:i], body[i+1:]
		}
		cr := bytes.HasSuffix(line, []byte("\r"))
		if cr {
			line = line[:len(line)-1]
		}
		out.Write(line)
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			if bytes.IndexByte(line, '?') >= 0 {
				out.WriteByte('&')
			} else {
				out.WriteByte('?')
			}
			out.WriteString(enc)
		}
		if cr {
			out.WriteByte('\r')
		}
		if rest != nil {
			out.WriteByte('\n')
		}
		body = rest
	}
	return out.Bytes()
}
