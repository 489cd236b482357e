//go:build tools

// Package tools pins the kwok controller. It lives in its own module because kwok needs k8s.io/* v0.36 while
// tools/kube pins v0.35, and one module graph cannot hold both.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
