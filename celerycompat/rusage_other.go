//go:build !unix

package celerycompat

import "github.com/celerybridge/celerybridge/celerycompat/protocol"

// rusage is unavailable off Unix (Python's resource module is Unix-only too): "rusage" is {}.
func rusage() protocol.PyDict { return protocol.PyDict{} }
