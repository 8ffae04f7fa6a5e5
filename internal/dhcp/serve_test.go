//go:build linux

package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kilnhq/kiln/internal/dhcp/dhcptest"
	"github.com/kilnhq/kiln/internal/resource"
)

// TestServeLoopback drives Serve's socket loop over loopback only: a PXE boot
// server request to an ephemeral port (its reply goes back to the sender, so no
// broadcast leaves the host), a giant datagram, and shutdown.
func TestServeLoopback(t *testing.T) {
	spec := resource.SubnetSpec{CIDR: "127.0.0.0/8", Mode: resource.ModeProxy, UnknownMachines: resource.UnknownAllocate}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := ListenUDP(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	srv := &Server{Subnets: StaticSubnets{mustSubnet(t, "lo", spec)}, PXEPort: port, Workers: 2}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()

	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	req := dhcptest.Msg(t, macA, dhcpv4.MessageTypeRequest, dhcptest.WithArch(iana.EFI_X86_64), dhcptest.WithVendor("PXEClient:Arch:00007:UNDI:003016"), dhcptest.WithCiaddr("127.0.0.1"))
	if _, err := client.WriteToUDP(make([]byte, MaxPacketSize+100), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WriteToUDP(req.ToBytes(), dst); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1500)
	n, _, err := client.ReadFromUDPAddrPort(b)
	if err != nil {
		t.Fatalf("no reply: %v (counters %+v)", err, srv.Metrics.Snapshot())
	}
	ack, err := dhcpv4.FromBytes(b[:n])
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "ipxe.efi" || ack.TransactionID != req.TransactionID {
		t.Fatalf("reply %v %v", ack, err)
	}
	if sid := ack.ServerIdentifier(); sid.String() != "127.0.0.1" {
		t.Errorf("server identifier %s: the receiving interface was not resolved", sid)
	}
	dhcptest.WaitFor(t, 5*time.Second, "the giant datagram to be counted", func() bool { return srv.Metrics.Dropped(DropTooLarge) == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := conn.WriteToUDPAddrPort([]byte{0}, netip.MustParseAddrPort("127.0.0.1:9")); err == nil {
		t.Error("Serve left the socket open")
	}
}
