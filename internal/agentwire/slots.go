package agentwire

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A/B slots: a disk laid out with two root partitions, each beside the partition
// holding its dm-verity hash tree, and an ESP holding systemd-boot and one boot
// entry per slot. image2slot writes the slot that is not running; systemd-boot's
// boot counting falls back to the other one when the new one does not come up.

// Slots are the slot names, in the order a first install fills them.
var Slots = []string{"a", "b"}

// SlotLabel is the GPT name of a slot's root partition; SlotVerityLabel that of
// its hash tree.
func SlotLabel(slot string) string       { return "root-" + slot }
func SlotVerityLabel(slot string) string { return "root-" + slot + "-verity" }

// OtherSlot is the slot that is not slot.
func OtherSlot(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// VerityHashSize is the size of the hash device veritysetup format writes for
// dataBytes of data with its defaults (4096-byte blocks, SHA-256): a 4 KiB
// superblock block, then every level of the tree. internal/verity computes the
// same from a superblock (its tests compare the two).
func VerityHashSize(dataBytes int64) int64 {
	const block, perBlock = 4096, 4096 / 32
	n := dataBytes / block
	size := int64(block)
	for n > 1 {
		n = (n + perBlock - 1) / perBlock
		size += n * block
	}
	return size
}

// CheckSlotLayout checks a partition action's layout that names any slot
// partition: both slots complete (root-a, root-a-verity, root-b, root-b-verity),
// of fixed and equal sizes (an upgrade writes either slot with the same image), each
// verity partition large enough for its root's hash tree, and an ESP for the boot
// entries. Layouts without slot partitions are not A/B and pass.
func CheckSlotLayout(specs []PartitionSpec) error {
	idx := map[string]int{}
	esp := -1
	for i, s := range specs {
		idx[s.Label] = i
		if t := strings.ToLower(s.Type); t == "esp" || t == "efi" || strings.EqualFold(s.Type, PartitionTypes["esp"]) {
			esp = i
		}
	}
	var want []string
	for _, s := range Slots {
		want = append(want, SlotLabel(s), SlotVerityLabel(s))
	}
	if !slices.ContainsFunc(want, func(l string) bool { _, ok := idx[l]; return ok }) {
		return nil
	}
	for _, l := range want {
		if _, ok := idx[l]; !ok {
			return fmt.Errorf("partitions: no partition labelled %q: an A/B layout has %s", l, strings.Join(want, ", "))
		}
	}
	if esp < 0 {
		return fmt.Errorf("partitions: an A/B layout needs an ESP (type: esp) for the slots' boot entries")
	}
	size := func(label string) (int64, error) {
		i := idx[label]
		b, rest, err := ParseSize(specs[i].Size)
		if err != nil {
			return 0, fmt.Errorf("partitions[%d].%w", i, err)
		}
		if rest {
			return 0, fmt.Errorf("partitions[%d].size: slot partition %q cannot take the rest: both slots must be the same size", i, label)
		}
		return int64(b), nil
	}
	var rootA, verA int64
	for _, s := range Slots {
		root, err := size(SlotLabel(s))
		if err != nil {
			return err
		}
		ver, err := size(SlotVerityLabel(s))
		if err != nil {
			return err
		}
		if need := VerityHashSize(root); ver < need {
			return fmt.Errorf("partitions[%d].size: %s of %q cannot hold the hash tree of %q (%s needs %s)",
				idx[SlotVerityLabel(s)], SizeText(ver), SlotVerityLabel(s), SlotLabel(s), SizeText(root), SizeText(need))
		}
		if s == Slots[0] {
			rootA, verA = root, ver
			continue
		}
		if root != rootA {
			return fmt.Errorf("partitions[%d].size: %q is %s but %q is %s: both slots must be the same size",
				idx[SlotLabel(s)], SlotLabel(s), SizeText(root), SlotLabel(Slots[0]), SizeText(rootA))
		}
		if ver != verA {
			return fmt.Errorf("partitions[%d].size: %q is %s but %q is %s: both slots must be the same size",
				idx[SlotVerityLabel(s)], SlotVerityLabel(s), SizeText(ver), SlotVerityLabel(Slots[0]), SizeText(verA))
		}
	}
	return nil
}

// declaredDiskSize is the smallest disk an action may meet: its selector's
// minSize, else args.minDiskSize; 0 when neither says.
func declaredDiskSize(args Args) (int64, string, error) {
	if sel, ok := args["disk"].(map[string]any); ok {
		if ms, ok := sel["minSize"].(string); ok && ms != "" {
			b, _, err := ParseSize(ms)
			return int64(b), "args.disk.minSize", err
		}
	}
	ms, err := args.String("minDiskSize")
	if err != nil || ms == "" {
		return 0, "", err
	}
	b, rest, err := ParseSize(ms)
	if err == nil && rest {
		err = fmt.Errorf("%q is not a size like 20G", ms)
	}
	if err != nil {
		return 0, "", fmt.Errorf("args.minDiskSize: %v", err)
	}
	return int64(b), "args.minDiskSize", nil
}

// checkImage2Slot refuses at apply what image2slot could never use: a slot that is
// not a or b, trusted certificates that are not PEM certificates.
func checkImage2Slot(args Args) error {
	if s, err := args.String("slot"); err != nil {
		return err
	} else if s != "" && !templated(s) && !slices.Contains(Slots, s) {
		return fmt.Errorf("slot: %q is not a or b (leave it out: Kiln picks the slot that is not running)", s)
	}
	pemText, err := args.String("trustedCerts")
	if err != nil {
		return err
	}
	if templated(pemText) {
		return nil
	}
	if _, err := ParseCertificatesPEM([]byte(pemText)); err != nil {
		return fmt.Errorf("trustedCerts: %v", err)
	}
	return nil
}

// ParseCertificatesPEM reads the PEM certificates of image2slot's trustedCerts:
// the keys whose signature of a root hash the agent accepts.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE", len(certs)+1, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE in it")
	}
	return certs, nil
}
