package callback

import (
	"errors"
	"testing"
)

func TestAllowList(t *testing.T) {
	l, err := newAllowList("http://127.0.0.1:8001/receive-task-result", []string{
		"https://hooks.example.com/celery/",
		"https://api.example.com",
		"https://exact.example.com/cb?tenant=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8001/receive-task-result", true},
		{"http://127.0.0.1:8001/receive-task-result/x", false}, // the default URL is exact
		{"http://127.0.0.1:8002/receive-task-result", false},
		{"https://127.0.0.1:8001/receive-task-result", false},
		{"https://hooks.example.com/celery/", true},
		{"https://hooks.example.com/celery/a/b", true},
		{"https://HOOKS.example.com/celery/a", true},
		{"https://hooks.example.com/celery", false},
		{"https://hooks.example.com/celeryx", false},
		{"https://hooks.example.com/other", false},
		{"https://hooks.example.com/celery/../admin", false},
		{"https://hooks.example.com/celery/%2e%2e/admin", false},
		{"https://hooks.example.com/celery//x", false},
		{"https://hooks.example.com.evil.net/celery/", false},
		{"https://user:pw@hooks.example.com/celery/", false},
		{"https://hooks.example.com/celery/#frag", false},
		{"http://hooks.example.com/celery/", false},
		{"https://api.example.com", true},
		{"https://api.example.com/", true},
		{"https://api.example.com/anything", true},
		{"https://api.example.com:8443/", false},
		{"https://exact.example.com/cb?tenant=1", true},
		{"https://exact.example.com/cb?tenant=2", false},
		{"https://exact.example.com/cb", false},
		{"ftp://hooks.example.com/celery/", false},
		{"/relative", false},
		{"http://169.254.169.254/latest/meta-data/", false},
		{"::not a url", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := l.check(tt.url)
			if tt.ok && err != nil {
				t.Errorf("check = %v, want allowed", err)
			}
			if !tt.ok {
				var ue *URLError
				if !errors.As(err, &ue) || !errors.Is(err, ErrURLNotAllowed) || ue.URL != tt.url {
					t.Errorf("check = %v, want a *URLError for %q", err, tt.url)
				}
			}
		})
	}
}

func TestAllowListBadConfig(t *testing.T) {
	for _, entries := range [][]string{{"not a url"}, {"ftp://x/"}, {"https://u:p@x/"}} {
		if _, err := newAllowList("", entries); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("newAllowList(%q) = %v, want ErrInvalidConfig", entries, err)
		}
	}
}
