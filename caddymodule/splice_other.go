//go:build !linux

package caddymodule

// spliceToBrowser: splice(2) is Linux's; elsewhere pumpToBrowser copies.
func (s *session) spliceToBrowser() bool { return false }
