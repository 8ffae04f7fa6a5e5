package tftp

import (
	"slices"
	"testing"
	"time"
)

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name    string
		opts    []option
		mode    string
		size    int64
		maxBlk  int
		maxWin  int
		blksize int
		window  int
		timeout time.Duration
		oack    []option
	}{
		{name: "no options", blksize: 512, window: 1},
		{name: "unknown options ignored", opts: []option{{"multicast", ""}, {"utimeout", "1000"}}, blksize: 512, window: 1},
		{name: "blksize accepted", opts: []option{{"blksize", "1024"}}, blksize: 1024, window: 1, oack: []option{{"blksize", "1024"}}},
		{name: "blksize clamped to max", opts: []option{{"blksize", "65464"}}, blksize: 1468, window: 1, oack: []option{{"blksize", "1468"}}},
		{name: "blksize above protocol max clamped", opts: []option{{"blksize", "65535"}}, maxBlk: 65464, blksize: 65464, window: 1, oack: []option{{"blksize", "65464"}}},
		{name: "blksize huge clamped", opts: []option{{"blksize", "99999999999999999"}}, blksize: 1468, window: 1, oack: []option{{"blksize", "1468"}}},
		{name: "blksize minimum", opts: []option{{"blksize", "8"}}, blksize: 8, window: 1, oack: []option{{"blksize", "8"}}},
		{name: "blksize too small declined", opts: []option{{"blksize", "7"}}, blksize: 512, window: 1},
		{name: "blksize garbage declined", opts: []option{{"blksize", "-1"}, {"tsize", "x"}}, blksize: 512, window: 1},
		{name: "tsize answered with size", opts: []option{{"tsize", "0"}}, size: 12345, blksize: 512, window: 1, oack: []option{{"tsize", "12345"}}},
		{name: "tsize empty file declined", opts: []option{{"tsize", "0"}}, size: 0, blksize: 512, window: 1},
		{name: "tsize unknown size declined", opts: []option{{"tsize", "0"}}, size: -1, blksize: 512, window: 1},
		{name: "tsize netascii declined", opts: []option{{"tsize", "0"}}, mode: "netascii", size: 10, blksize: 512, window: 1},
		{name: "timeout echoed", opts: []option{{"timeout", "3"}}, blksize: 512, window: 1, timeout: 3 * time.Second, oack: []option{{"timeout", "3"}}},
		{name: "timeout 0 declined", opts: []option{{"timeout", "0"}}, blksize: 512, window: 1},
		{name: "timeout 256 declined", opts: []option{{"timeout", "256"}}, blksize: 512, window: 1},
		{name: "windowsize accepted", opts: []option{{"windowsize", "16"}}, blksize: 512, window: 16, oack: []option{{"windowsize", "16"}}},
		{name: "windowsize clamped", opts: []option{{"windowsize", "65535"}}, blksize: 512, window: 64, oack: []option{{"windowsize", "64"}}},
		{name: "windowsize 0 declined", opts: []option{{"windowsize", "0"}}, blksize: 512, window: 1},
		{
			name: "all, in the client's order",
			opts: []option{{"windowsize", "8"}, {"tsize", "0"}, {"blksize", "1468"}, {"timeout", "1"}},
			size: 7, blksize: 1468, window: 8, timeout: time.Second,
			oack: []option{{"windowsize", "8"}, {"tsize", "7"}, {"blksize", "1468"}, {"timeout", "1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode, maxBlk, maxWin := tt.mode, tt.maxBlk, tt.maxWin
			if mode == "" {
				mode = "octet"
			}
			if maxBlk == 0 {
				maxBlk = DefaultMaxBlockSize
			}
			if maxWin == 0 {
				maxWin = DefaultMaxWindowSize
			}
			n := negotiate(tt.opts, mode, tt.size, maxBlk, maxWin)
			if n.blksize != tt.blksize || n.window != tt.window || n.timeout != tt.timeout || !slices.Equal(n.oack, tt.oack) {
				t.Errorf("negotiate = %+v\nwant blksize %d window %d timeout %v oack %v", n, tt.blksize, tt.window, tt.timeout, tt.oack)
			}
		})
	}
}
