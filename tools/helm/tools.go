//go:build tools

// Package tools pins the helm CLI for tools/build-binaries.sh.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
