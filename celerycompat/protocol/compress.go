package protocol

import (
	"bytes"
	"compress/bzip2"
	"compress/zlib"
	"fmt"
	"io"
)

// Body compression, as kombu/compression.py registers it. "application/x-gzip" is zlib's format
// (kombu registers zlib.compress under that mime type, with the aliases "gzip" and "zlib");
// "application/x-bz2" is bzip2 (aliases "bzip2", "bzip"). kombu resolves aliases when decoding,
// so they are accepted in the header too. lzma, brotli and zstd are not supported.

func compressionKind(mime string) string {
	switch mime {
	case CompressionZlib, "gzip", "zlib":
		return "zlib"
	case CompressionBzip2, "bzip2", "bzip":
		return "bzip2"
	}
	return ""
}

// decompressBody undoes compression, reading at most limit bytes of output.
func decompressBody(mime string, data []byte, limit int) ([]byte, error) {
	var r io.Reader
	switch compressionKind(mime) {
	case "zlib":
		zr, err := zlib.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("zlib: %w", err)
		}
		defer zr.Close()
		r = zr
	case "bzip2":
		r = bzip2.NewReader(bytes.NewReader(data))
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedCompression, mime)
	}
	var buf bytes.Buffer
	buf.Grow(min(4*len(data)+512, limit+1))
	n, err := buf.ReadFrom(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", compressionKind(mime), err)
	}
	if n > int64(limit) {
		return nil, fmt.Errorf("%w: decompressed body over %d bytes", ErrBodyTooLarge, limit)
	}
	return buf.Bytes(), nil
}

// compressBody compresses a body we write. Only zlib can be written (the standard library has no
// bzip2 compressor).
func compressBody(mime string, data []byte) ([]byte, error) {
	if compressionKind(mime) != "zlib" {
		return nil, fmt.Errorf("%w: %w: cannot write compression %q", ErrEncode, ErrUnsupportedCompression, mime)
	}
	var buf bytes.Buffer
	buf.Grow(len(data)/2 + 64)
	zw := zlib.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, fmt.Errorf("%w: zlib: %w", ErrEncode, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("%w: zlib: %w", ErrEncode, err)
	}
	return buf.Bytes(), nil
}
