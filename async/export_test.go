package async

// Names the black-box tests (package async_test, which run a real Caddy
// with the processing handler and so cannot be in this package) read.
type (
	JobRecord  = jobRecord
	RunningJob = runningJob
)

const (
	StatusRunning   = statusRunning
	StatusSucceeded = statusSucceeded
	StatusFailed    = statusFailed
	StatusCanceled  = statusCanceled
)

var (
	ReasonLost    = reasonLost
	ValidJobID    = validJobID
	AsyncOutcomes = asyncOutcomes
	AsyncRunning  = asyncRunning
	ErrShutdown   = errShutdown
	ErrDeleted    = errDeleted
	JobIDLen      = jobIDLen
)
