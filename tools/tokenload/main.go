// Command tokenload sends client-credentials or introspection requests to a ward authority
// over keep-alive HTTPS from many goroutines and prints the rate; run it as a
// separate process and read the server's CPU time from /proc to get its cost per request
// (docs/benchmarks.md shows how).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("url", "", "authority URL")
	bundle := flag.String("bundle", "", "CA bundle")
	id := flag.String("id", "", "client id")
	secret := flag.String("secret", "", "client secret")
	path := flag.String("path", "/oauth2/token", "")
	body := flag.String("body", "grant_type=client_credentials", "")
	dur := flag.Duration("d", 5*time.Second, "")
	conc := flag.Int("c", 32, "")
	flag.Parse()
	if *base == "" || *id == "" || *secret == "" {
		fmt.Fprintln(os.Stderr, "tokenload: -url, -id and -secret are required")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*bundle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenload:", err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "tokenload: -bundle holds no PEM certificates")
		os.Exit(1)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: *conc}
	hc := &http.Client{Transport: tr}
	var n, bad atomic.Int64
	stop := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest("POST", *base+*path, strings.NewReader(*body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(url.QueryEscape(*id), url.QueryEscape(*secret))
				resp, err := hc.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("requests=%d bad=%d rate=%.0f/s\n", n.Load(), bad.Load(), float64(n.Load())/dur.Seconds())
}
