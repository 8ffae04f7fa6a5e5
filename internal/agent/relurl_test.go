package agent

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// TestGetResolvesRelativeURLs: without --public-url Kiln renders artifact URLs as
// paths ("/artifacts/NAME"); the agent fetches them from the server it reached Kiln
// at, through its own client.
func TestGetResolvesRelativeURLs(t *testing.T) {
	img := testImage(1 << 20)
	srv := newImageServer(t)
	srv.files["artifacts/img.raw"] = img
	env := testEnv(t, &System{AllowRegularFiles: true})
	env.kiln = StaticTransport{URL: srv.URL}
	disk := diskFile(t, 4<<20)
	if err := image2disk(context.Background(), env, Args{"disk": disk, "imageURL": "/artifacts/img.raw", "sha256": sum(img)}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got[:len(img)], img) {
		t.Fatal("the disk does not hold the image")
	}
	if n := srv.hits["artifacts/img.raw"]; n != 1 {
		t.Errorf("the server saw %d requests for the image, want 1", n)
	}
}
