#include "textflag.h"

// func goroutineStack() (lo, hi uintptr)
// Loads g from thread-local storage (ABI0) and returns g.stack.
TEXT ·goroutineStack(SB),NOSPLIT,$0-16
	MOVQ TLS, CX
	MOVQ 0(CX)(TLS*1), AX
	MOVQ 0(AX), BX
	MOVQ BX, lo+0(FP)
	MOVQ 8(AX), BX
	MOVQ BX, hi+8(FP)
	RET
