# Conveniences only: the README's commands work without make.
.PHONY: test bench bench-opa lint dev ci

test:
	go test ./...

bench:
	go test -run '^$$' -bench . -benchmem ./...

lint:
	gofmt -l $$(git ls-files '*.go')
	go vet ./...
	staticcheck ./...

dev:
	go run ./cmd/ward dev

ci:
	bash .ci/run

bench-opa:
	cd tools/opabench && go test -run '^$$' -bench . -benchmem
