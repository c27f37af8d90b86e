// Command ward is the single binary of ward (today: the authority and the
// developer environment). All wiring lives in internal/cli.
package main

import (
	"os"

	"github.com/wardsec/ward/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
