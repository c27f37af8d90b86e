// Package opabench compares ward's embedded PDP with embedded OPA on an
// equivalent policy, in one benchmark run. It is a module of its own so
// that OPA stays a benchmark-only dependency: ward's module never
// requires it.
//
//	cd tools/opabench && go test -bench . -benchmem
package opabench
