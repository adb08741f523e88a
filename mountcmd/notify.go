package mountcmd

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// systemd readiness (sd_notify(3)). Under a unit with Type=notify,
// systemd sets NOTIFY_SOCKET; mount sends READY=1 once the mount is
// usable (right after the readiness line on standard output) and
// STOPPING=1 when it starts to unmount. Without NOTIFY_SOCKET nothing is
// sent. With --daemon, the foreground process sends READY=1 together
// with MAINPID= of the background server, which then is the service's
// main process and sends STOPPING=1 itself.

func notifyReady(log logrus.FieldLogger, mainPID int) {
	state := daemon.SdNotifyReady
	if mainPID > 0 {
		state = fmt.Sprintf("%s\nMAINPID=%d", state, mainPID)
	}
	sdNotify(log, state)
}

func notifyStopping(log logrus.FieldLogger) { sdNotify(log, daemon.SdNotifyStopping) }

func sdNotify(log logrus.FieldLogger, state string) {
	// NOTIFY_SOCKET stays set: READY and STOPPING come from one process.
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.WithError(err).Warnf("cannot tell systemd %q (NOTIFY_SOCKET)", state)
	}
}
