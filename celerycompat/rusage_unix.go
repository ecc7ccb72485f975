//go:build unix

package celerycompat

import (
	"syscall"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// rusage is the stats command's "rusage": getrusage(RUSAGE_SELF) with Python's resource field
// names (times in seconds; maxrss as the OS reports it, KiB on Linux).
func rusage() protocol.PyDict {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return protocol.PyDict{}
	}
	secs := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return protocol.PyDict{
		{Key: "utime", Value: secs(r.Utime)}, {Key: "stime", Value: secs(r.Stime)}, {Key: "maxrss", Value: int64(r.Maxrss)},
		{Key: "ixrss", Value: int64(r.Ixrss)}, {Key: "idrss", Value: int64(r.Idrss)}, {Key: "isrss", Value: int64(r.Isrss)},
		{Key: "minflt", Value: int64(r.Minflt)}, {Key: "majflt", Value: int64(r.Majflt)}, {Key: "nswap", Value: int64(r.Nswap)},
		{Key: "inblock", Value: int64(r.Inblock)}, {Key: "oublock", Value: int64(r.Oublock)}, {Key: "msgsnd", Value: int64(r.Msgsnd)},
		{Key: "msgrcv", Value: int64(r.Msgrcv)}, {Key: "nsignals", Value: int64(r.Nsignals)}, {Key: "nvcsw", Value: int64(r.Nvcsw)},
		{Key: "nivcsw", Value: int64(r.Nivcsw)},
	}
}
