//go:build unix

package celerycompat

import "syscall"

// rusage is the stats command's "rusage": getrusage(RUSAGE_SELF) with Python's resource field
// names (times in seconds; maxrss as the OS reports it, KiB on Linux).
func rusage() pyDict {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return pyDict{}
	}
	secs := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return pyDict{
		{"utime", secs(r.Utime)}, {"stime", secs(r.Stime)}, {"maxrss", int64(r.Maxrss)},
		{"ixrss", int64(r.Ixrss)}, {"idrss", int64(r.Idrss)}, {"isrss", int64(r.Isrss)},
		{"minflt", int64(r.Minflt)}, {"majflt", int64(r.Majflt)}, {"nswap", int64(r.Nswap)},
		{"inblock", int64(r.Inblock)}, {"oublock", int64(r.Oublock)}, {"msgsnd", int64(r.Msgsnd)},
		{"msgrcv", int64(r.Msgrcv)}, {"nsignals", int64(r.Nsignals)}, {"nvcsw", int64(r.Nvcsw)},
		{"nivcsw", int64(r.Nivcsw)},
	}
}
