package web

import (
	"testing"

	"github.com/livecluster/livecluster/media/mediatest"
)

// TestMain removes the test FLV mediatest generates once per test binary
// (it was left in the temporary directory after every run).
func TestMain(m *testing.M) { mediatest.Main(m) }
