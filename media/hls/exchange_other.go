//go:build unix && !linux

package hls

import "errors"

var errNoExchange = errors.New("renameat2 RENAME_EXCHANGE is Linux only")

func (d *appDir) exchange(a, b string) error { return errNoExchange }

func exchangeUnsupported(err error) bool { return errors.Is(err, errNoExchange) }
