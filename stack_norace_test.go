//go:build !race

package processing

// maxResponsePathStack bounds TestStackDepthOfTheResponsePath. Measured
// with Go 1.26 on amd64: 368 bytes, and 584 when commit made the call.
const maxResponsePathStack = 420
