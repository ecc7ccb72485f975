package callback_test

import (
	"fmt"
	"net/http"

	"github.com/celerybridge/celerybridge/callback"
)

func ExampleEventID() {
	// The same task outcome always has the same id, so a re-run after a crash is deduped.
	fmt.Println(callback.EventID("c3c002ad-73b9-43c6-8393-21a5ad38ab10", "success"))
	fmt.Println(callback.EventID("c3c002ad-73b9-43c6-8393-21a5ad38ab10", "failed"))
	// Output:
	// 667e47466e182eb8963ba4cfdf1d1105
	// c79bf9793b59ecb360c767b4f6e4605d
}

func ExampleSign() {
	body := []byte(`{"task_id":"t1","status":"success"}`)
	// Sent as X-Celerybridge-Timestamp: 1700000000 and X-Celerybridge-Signature: <this>.
	fmt.Println(callback.Sign([]byte("secret"), 1700000000, body))
	// Output:
	// v1=75c46dfb52a65e98337310dbafc1b04b1ec19b508b9d7a6142dda8ca5c240d73
}

func ExampleNewHandler() {
	store := callback.NewMemoryStore() // sqlitestore.New(ctx, path) to keep callbacks across restarts
	h, err := callback.NewHandler(callback.HandlerConfig{Store: store, Secret: []byte("shared secret")})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/receive-task-result", h) // with echo: e.POST("/receive-task-result", echo.WrapHandler(h))
	_ = http.Server{Addr: "127.0.0.1:8001", Handler: mux}
}
