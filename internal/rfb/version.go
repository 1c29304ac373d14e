package rfb

import "errors"

// ErrNotRFB is returned by ParseVersion for anything but a protocol version
// greeting.
var ErrNotRFB = errors.New("rfb: not an RFB protocol version greeting")

// VersionLen is the length of the protocol version greeting.
const VersionLen = 12

// ParseVersion checks that greeting is exactly an RFB protocol version
// message, "RFB xxx.yyy\n" with three decimal digits on each side, and
// returns the two numbers. It does not allocate.
func ParseVersion(greeting []byte) (major, minor int, err error) {
	if len(greeting) != VersionLen ||
		greeting[0] != 'R' || greeting[1] != 'F' || greeting[2] != 'B' || greeting[3] != ' ' ||
		greeting[7] != '.' || greeting[11] != '\n' {
		return 0, 0, ErrNotRFB
	}
	major, ok1 := digits3(greeting[4:7])
	minor, ok2 := digits3(greeting[8:11])
	if !ok1 || !ok2 {
		return 0, 0, ErrNotRFB
	}
	return major, minor, nil
}

func digits3(b []byte) (int, bool) {
	n := 0
	for _, c := range b[:3] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// AppendVersion appends the greeting "RFB xxx.yyy\n"; major and minor must
// be in 0..999.
func AppendVersion(b []byte, major, minor int) []byte {
	b = append(b, "RFB "...)
	b = append3(b, major)
	b = append(b, '.')
	b = append3(b, minor)
	return append(b, '\n')
}

func append3(b []byte, n int) []byte {
	return append(b, byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

// UsedMinor is the RFB 3.x minor version to speak when the peer offers
// 3.minor (RFC 6143 7.1.1): 3.3, 3.7 or 3.8; an unknown version is taken as
// 3.3, except that anything above 3.8 can be answered with 3.8.
func UsedMinor(minor int) int {
	switch {
	case minor >= 8:
		return 8
	case minor == 7:
		return 7
	}
	return 3
}
