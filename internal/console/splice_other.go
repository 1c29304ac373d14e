//go:build !linux

package console

// spliceToBrowser: splice(2) is Linux's; elsewhere pumpToBrowser copies.
func (s *Session) spliceToBrowser() bool { return false }
