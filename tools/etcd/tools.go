//go:build tools

// Package tools pins etcd's server main package for tools/build-binaries.sh; `go install …@v` cannot build it
// because etcd's own go.mod carries replace directives.
package tools

import _ "go.etcd.io/etcd/server/v3"
