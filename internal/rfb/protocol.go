package rfb

// The protocol's numbers, one set for the whole project: RFC 6143 and the
// community rfbproto document ("The RFB Protocol", rfbproto.rst), which
// names the extensions noVNC, TigerVNC and QEMU speak.

// Security types (RFC 6143 7.2.2) and VeNCrypt subtypes (rfbproto,
// "VeNCrypt").
const (
	SecurityInvalid  = 0
	SecurityNone     = 1
	SecurityVNCAuth  = 2
	SecurityVeNCrypt = 19

	VeNCryptPlain     = 256
	VeNCryptTLSNone   = 257
	VeNCryptTLSVnc    = 258
	VeNCryptTLSPlain  = 259
	VeNCryptX509None  = 260
	VeNCryptX509Vnc   = 261
	VeNCryptX509Plain = 262
)

// Client-to-server message types (RFC 6143 7.5, rfbproto).
const (
	MsgSetPixelFormat           = 0
	MsgSetEncodings             = 2
	MsgFramebufferUpdateRequest = 3
	MsgKeyEvent                 = 4
	MsgPointerEvent             = 5
	MsgClientCutText            = 6
	MsgEnableContinuousUpdates  = 150
	MsgClientFence              = 248
	MsgXvpClient                = 250
	MsgSetDesktopSize           = 251
	MsgGii                      = 253
	MsgQEMUClient               = 255

	// QEMU client message subtypes.
	QEMUExtendedKeyEvent = 0
	QEMUAudio            = 1
)

// Server-to-client message types (RFC 6143 7.6, rfbproto).
const (
	MsgFramebufferUpdate      = 0
	MsgSetColourMapEntries    = 1
	MsgBell                   = 2
	MsgServerCutText          = 3
	MsgEndOfContinuousUpdates = 150
	MsgServerFence            = 248
	MsgXvpServer              = 250
	MsgQEMUServer             = 255
)

// Encodings (RFC 6143 7.7, rfbproto).
const (
	EncodingRaw      int32 = 0
	EncodingCopyRect int32 = 1
	EncodingRRE      int32 = 2
	EncodingCoRRE    int32 = 4
	EncodingHextile  int32 = 5
	EncodingZlib     int32 = 6
	EncodingTight    int32 = 7
	EncodingZRLE     int32 = 16
	EncodingJPEG     int32 = 21
	EncodingTightPNG int32 = -260
)

// Pseudo-encodings (rfbproto).
const (
	EncodingJPEGQuality0            int32 = -32  // to -23: JPEG quality levels
	EncodingCompressLevel0          int32 = -256 // to -247: compression levels
	EncodingDesktopSize             int32 = -223
	EncodingLastRect                int32 = -224
	EncodingCursor                  int32 = -239
	EncodingXCursor                 int32 = -240
	EncodingQEMUPointerMotionChange int32 = -257
	EncodingQEMUExtendedKeyEvent    int32 = -258
	EncodingQEMUAudio               int32 = -259
	EncodingDesktopName             int32 = -307
	EncodingGii                     int32 = -305
	EncodingExtendedDesktopSize     int32 = -308
	EncodingXvp                     int32 = -309
	EncodingFence                   int32 = -312
	EncodingContinuousUpdates       int32 = -313
	EncodingCursorWithAlpha         int32 = -314
	EncodingExtendedMouseButtons    int32 = -316
	EncodingVMwareCursor            int32 = 0x574d5664
	EncodingExtendedClipboard       int32 = -1063131698 // 0xc0a1e5ce
)

// More encodings and pseudo-encodings (rfbproto) that the server-stream
// framer knows.
const (
	EncodingH264             int32 = 50
	EncodingQEMULEDState     int32 = -261
	EncodingTightWithoutZlib int32 = -317
	EncodingJPEGFineQuality0 int32 = -512 // to -412: JPEG quality 0 to 100
	EncodingJPEGSubsampling0 int32 = -768 // to -763: chrominance subsampling levels
)

// QEMU server message subtypes and the operations of its audio messages.
const (
	QEMUServerAudio = 1

	QEMUAudioEnd   = 0
	QEMUAudioBegin = 1
	QEMUAudioData  = 2
)

// Extended Clipboard flags (rfbproto, "Extended Clipboard Pseudo-Encoding"):
// the first word of a ServerCutText or ClientCutText with a negative length.
const (
	ClipboardText    = 1 << 0
	ClipboardRTF     = 1 << 1
	ClipboardHTML    = 1 << 2
	ClipboardDIB     = 1 << 3
	ClipboardFiles   = 1 << 4
	ClipboardCaps    = 1 << 24
	ClipboardRequest = 1 << 25
	ClipboardPeek    = 1 << 26
	ClipboardNotify  = 1 << 27
	ClipboardProvide = 1 << 28
)
