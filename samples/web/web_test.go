package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/runtimetest"
	"github.com/granary-rt/granary/samples/bank"
	"github.com/granary-rt/granary/samples/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, srv *httptest.Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func TestAPI(t *testing.T) {
	c := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Register: func(s *runtime.Silo) { bank.RegisterAccount(s, bank.NewAccount) },
	})
	srv := httptest.NewServer(web.NewHandler(c.Client()))
	defer srv.Close()

	if code, out := do(t, srv, "POST", "/accounts/alice/deposit", `{"amount":100}`); code != 200 || out["balance"] != 100.0 {
		t.Fatalf("deposit: %d %v", code, out)
	}
	code, out := do(t, srv, "POST", "/accounts/alice/withdraw", `{"amount":500}`)
	if code != http.StatusConflict || out["code"] != "bank.insufficient_funds" {
		t.Fatalf("overdraft: %d %v; want 409 with code bank.insufficient_funds", code, out)
	}
	if code, out := do(t, srv, "POST", "/accounts/alice/withdraw", `{"amount":-1}`); code != http.StatusBadRequest {
		t.Fatalf("negative amount: %d %v", code, out)
	}
	if code, _ := do(t, srv, "POST", "/accounts/alice/deposit", `not json`); code != http.StatusBadRequest {
		t.Fatalf("malformed body: %d", code)
	}
	if code, out := do(t, srv, "GET", "/accounts/alice", ""); code != 200 || out["balance"] != 100.0 {
		t.Fatalf("balance: %d %v", code, out)
	}
	resp, err := srv.Client().Get(srv.URL + "/accounts/alice/history?n=5")
	if err != nil {
		t.Fatal(err)
	}
	var hist []bank.Transaction
	err = json.NewDecoder(resp.Body).Decode(&hist)
	resp.Body.Close()
	if err != nil || len(hist) != 1 || hist[0].Amount != 100 {
		t.Fatalf("history: %+v, %v", hist, err)
	}
	if code, _ := do(t, srv, "GET", "/accounts/alice/history?n=x", ""); code != http.StatusBadRequest {
		t.Fatalf("bad n: %d", code)
	}
	resp, err = srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "Granary bank") {
		t.Fatalf("page: %s", page)
	}
}
