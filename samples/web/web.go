// Package web is the HTTP frontend of the bank sample: a small JSON API and
// a plain page, calling account grains through a grain.Caller (the
// cross-process client in cmd/web, a silo's client in tests).
//
//	GET  /accounts/{id}            -> {"account":"alice","balance":70}
//	POST /accounts/{id}/deposit    {"amount":100} -> {"account":"alice","balance":170}
//	POST /accounts/{id}/withdraw   {"amount":30}  -> 200, or 409 {"error":"...","code":"bank.insufficient_funds"}
//	GET  /accounts/{id}/history?n=5
//	GET  /                         a page with a form
package web

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/samples/bank"
)

// NewHandler returns the HTTP API, calling grains through c.
func NewHandler(c grain.Caller) http.Handler {
	h := &handler{c: c}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /accounts/{id}", h.balance)
	mux.HandleFunc("GET /accounts/{id}/history", h.history)
	mux.HandleFunc("POST /accounts/{id}/deposit", h.move(bank.AccountRef.Deposit))
	mux.HandleFunc("POST /accounts/{id}/withdraw", h.move(bank.AccountRef.Withdraw))
	return mux
}

type handler struct{ c grain.Caller }

// requestTimeout bounds each grain call made for a request.
const requestTimeout = 5 * time.Second

type balanceJSON struct {
	Account string `json:"account"`
	Balance int64  `json:"balance"`
}

func (h *handler) balance(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	b, err := bank.NewAccountRef(h.c, id).Balance(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, balanceJSON{Account: id, Balance: b})
}

func (h *handler) history(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	n := 10
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > 50 {
			writeJSON(w, http.StatusBadRequest, errorJSON{Error: "n must be an integer between 0 and 50"})
			return
		}
	}
	hist, err := bank.NewAccountRef(h.c, r.PathValue("id")).History(ctx, n)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, hist)
}

func (h *handler) move(op func(bank.AccountRef, context.Context, int64) (int64, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		var body struct {
			Amount int64 `json:"amount"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, errorJSON{Error: "body must be {\"amount\": <cents>}: " + err.Error()})
			return
		}
		id := r.PathValue("id")
		b, err := op(bank.NewAccountRef(h.c, id), ctx, body.Amount)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, balanceJSON{Account: id, Balance: b})
	}
}

type errorJSON struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
	// Outcome is what the call did: "did not run" (safe to retry), "ran
	// and failed" or "outcome unknown" (read before retrying).
	Outcome string `json:"outcome"`
}

// writeError maps grain errors to HTTP statuses: domain errors are the
// client's fault; a call that did not run is retryable (503); one whose
// outcome is unknown is 504, whatever its code.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	outcome := grain.OutcomeOf(err)
	switch {
	case errors.Is(err, bank.ErrInsufficientFunds):
		status = http.StatusConflict
	case errors.Is(err, bank.ErrInvalidAmount):
		status = http.StatusBadRequest
	case outcome == grain.OutcomeNotRun:
		status = http.StatusServiceUnavailable
	case outcome == grain.OutcomeUnknown:
		status = http.StatusGatewayTimeout
	}
	writeJSON(w, status, errorJSON{Error: err.Error(), Code: grain.CodeOf(err), Outcome: outcome.String()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Granary bank</title></head>
<body>
<h1>Granary bank</h1>
<p>Each account is a grain. Try the JSON API:</p>
<pre>
curl -s localhost{{.}}/accounts/alice
curl -s -XPOST localhost{{.}}/accounts/alice/deposit -d '{"amount":100}'
curl -s -XPOST localhost{{.}}/accounts/alice/withdraw -d '{"amount":30}'
curl -s localhost{{.}}/accounts/alice/history?n=5
</pre>
</body></html>
`))

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	port := ""
	if _, p, ok := cutLast(r.Host, ':'); ok {
		port = ":" + p
	}
	_ = pageTmpl.Execute(w, port)
}

func cutLast(s string, sep byte) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
