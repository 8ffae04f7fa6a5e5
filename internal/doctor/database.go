package doctor

import (
	"fmt"
	"syscall"
	"time"
)

// Clock skew limits: Kiln compares its own clock with times other replicas
// wrote (lease expiries, token and certificate lifetimes, handle TTLs), so a
// skew of seconds shortens or stretches them; minutes break enrollment.
const (
	SkewWarn = 2 * time.Second
	SkewFail = 30 * time.Second
)

// Free space limits for the data dir: SQLite needs room for its WAL and for
// the copy VACUUM and a backup make.
const (
	FreeWarnBytes = 1 << 30   // 1 GiB
	FreeFailBytes = 100 << 20 // 100 MiB
)

// CheckSchemaVersion compares the database's schema version with the one this
// binary migrates to.
func CheckSchemaVersion(backend string, database, binary int64) Finding {
	f := Finding{Check: "database schema"}
	switch {
	case database == binary:
		f.Detail = fmt.Sprintf("%s at schema version %d, this Kiln's", backend, database)
	case database == 0:
		f.Status, f.Detail = Warn, fmt.Sprintf("%s has no Kiln schema yet (this Kiln's is %d)", backend, binary)
		f.Fix = "none if this is a new installation: kiln serve creates the schema at first start; otherwise check --data-dir / --database"
	case database < binary:
		f.Status, f.Detail = Warn, fmt.Sprintf("%s at schema version %d, older than this Kiln's %d: kiln serve migrates it at start", backend, database, binary)
		f.Fix = "back it up first (kiln backup --out FILE, or pg_dump for PostgreSQL); migrations cannot be undone"
	default:
		f.Status, f.Detail = Fail, fmt.Sprintf("%s at schema version %d, newer than this Kiln's %d: kiln serve refuses it (a downgrade)", backend, database, binary)
		f.Fix = "run the Kiln version that wrote it or a newer one, or restore a backup made at schema version " + fmt.Sprint(binary) + " or older"
	}
	return f
}

// CheckIntegrity reports the result of the database's own integrity check
// (SQLite's PRAGMA quick_check); err nil means it passed.
func CheckIntegrity(backend string, err error) Finding {
	f := Finding{Check: "database integrity"}
	if err != nil {
		f.Status, f.Detail = Fail, fmt.Sprintf("%s: %v", backend, err)
		f.Fix = "stop kiln serve and restore the last good backup (kiln restore --from FILE --force); keep the damaged kiln.db for analysis"
		return f
	}
	f.Detail = backend + ": quick_check ok"
	return f
}

// CheckClockSkew compares the database server's clock, read between before and
// after on this host, with this host's: the midpoint of the two is the best
// estimate of the moment the server read its clock.
func CheckClockSkew(server, before, after time.Time) Finding {
	f := Finding{Check: "clock skew to the database"}
	local := before.Add(after.Sub(before) / 2)
	skew := server.Sub(local)
	abs := skew.Abs()
	uncertainty := after.Sub(before) / 2
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	f.Detail = fmt.Sprintf("database clock %v %s this host's (±%v)", abs.Round(time.Millisecond), dir, uncertainty.Round(time.Millisecond))
	fix := "synchronise both clocks with NTP (timedatectl; chrony or systemd-timesyncd): lease and token lifetimes are compared across hosts"
	switch {
	case abs-uncertainty > SkewFail:
		f.Status, f.Fix = Fail, fix
	case abs-uncertainty > SkewWarn:
		f.Status, f.Fix = Warn, fix
	}
	return f
}

// ClockSkewNotApplicable is the finding for SQLite: it has no server clock,
// the database is read and written by this host's clock only.
func ClockSkewNotApplicable() Finding {
	return Finding{Check: "clock skew to the database", Detail: "n/a: SQLite has no server clock (only this host's is used)"}
}

// CheckFreeSpace reports the free space of the file system holding dir.
func CheckFreeSpace(dir string, warnBelow, failBelow uint64) Finding {
	f := Finding{Check: "data dir free space"}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		f.Status, f.Detail = Warn, fmt.Sprintf("%s: %v", dir, err)
		f.Fix = "run on the server host with --data-dir set as kiln serve has it"
		return f
	}
	free := st.Bavail * uint64(st.Bsize)
	total := st.Blocks * uint64(st.Bsize)
	f.Detail = fmt.Sprintf("%s: %s free of %s", dir, bytesIEC(free), bytesIEC(total))
	fix := "free space on that file system, or move --data-dir to a larger one: SQLite needs room for its WAL, and a backup for a copy of the database"
	switch {
	case free < failBelow:
		f.Status, f.Fix = Fail, fix
	case free < warnBelow:
		f.Status, f.Fix = Warn, fix
	}
	return f
}

// bytesIEC formats n as KiB, MiB, GiB ...
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
