//go:build !unix

package celerycompat

// rusage is unavailable off Unix (Python's resource module is Unix-only too): "rusage" is {}.
func rusage() pyDict { return pyDict{} }
