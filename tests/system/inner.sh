#!/usr/bin/env bash
# The system tier's steps inside the VM (run by tests/system/run, as root
# in the guest; / is the host's, with /etc, /usr and /var overlaid so that
# the install stays in the VM). Arguments: the shared work directory (the
# handset's state, prepared on the host, and where logs and timings go) and
# the directory with the built binaries.
#
# Each step is timed; on failure every inner log (daemon, bluetoothd,
# handset, btvirt, dbus, kernel) is printed.
set -uo pipefail

work=${1:?work directory}
from=${2:?build directory}
repo=$(cd "$(dirname "$0")/../.." && pwd)
logs=$work/logs
mkdir -p "$logs"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
pids=()
t0=$(date +%s.%N)
last=$t0

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

dump_logs() {
  for f in "$logs"/*.log; do
    [ -s "$f" ] || continue
    echo "----- $(basename "$f") -----"
    tail -n 80 "$f"
  done
  echo "----- dmesg (bluetooth) -----"
  dmesg | grep -i -E 'bluetooth|hci|rfcomm|vhci' | tail -n 40
}

fail() {
  echo "system: FAILED: $*" >&2
  echo "fail $*" >"$work/result"
  dump_logs >&2
  exit 1
}

step() { # step NAME COMMAND...: runs and times one step
  local name=$1; shift
  echo "== $name"
  if ! "$@"; then
    fail "$name"
  fi
  local now
  now=$(date +%s.%N)
  printf '%-44s %6ss\n' "$name" "$(elapsed "$last" "$now")" | tee -a "$work/timings"
  last=$now
}

wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- the steps -------------------------------------------------------------

modules() {
  modprobe hci_vhci && modprobe rfcomm && modprobe bluetooth
}

install_phonecsp() {
  # virtme-ng binds a generated file over /etc/shadow; systemd-sysusers
  # replaces shadow by rename, which a mount point refuses (EBUSY). The
  # overlay's own /etc/shadow (writes stay in the VM) is what it edits.
  umount /etc/shadow 2>/dev/null || true
  # The product's own installer, for real (DESTDIR unset): the binaries,
  # the unit, the D-Bus policy, the phonecsp user (sysusers), tmpfiles.
  "$repo/scripts/install" --from "$from" >"$logs/install.log" 2>&1 &&
    getent passwd phonecsp >/dev/null &&
    test -f /usr/share/dbus-1/system.d/org.phonecsp.CryptoProvider1.conf
}

system_bus() {
  mkdir -p /run/dbus
  rm -f /run/dbus/pid /run/dbus/system_bus_socket
  dbus-daemon --system --nofork --nopidfile >"$logs/dbus.log" 2>&1 &
  pids+=($!)
  wait_for 20 test -S /run/dbus/system_bus_socket
}

controllers() {
  # Under emulation, on a loaded host, the kernel's 2 s HCI command timeout
  # sometimes expires during a controller's first reset ("hci0: Opcode
  # 0x0c03 failed: -110"); such a controller never becomes a mgmt index.
  # Start btvirt again then (its controllers take the same indexes).
  local attempt
  for attempt in 1 2 3; do
    btvirt -l2 >>"$logs/btvirt.log" 2>&1 &
    btvirt_pid=$!
    if wait_for 20 test -e /sys/class/bluetooth/hci1 &&
      wait_for 15 controller_ready 0 && wait_for 15 controller_ready 1; then
      pids+=("$btvirt_pid")
      return 0
    fi
    echo "btvirt attempt $attempt: a controller did not come up; again" | tee -a "$logs/btvirt.log"
    dmesg | grep -i 'hci' | tail -n 5 >>"$logs/btvirt.log"
    kill "$btvirt_pid"; wait "$btvirt_pid" 2>/dev/null
    wait_for 10 bash -c '! ls /sys/class/bluetooth/hci* >/dev/null 2>&1'
  done
  return 1
}

bluetooth_daemon() {
  mkdir -p /var/lib/bluetooth
  local bt=/usr/libexec/bluetooth/bluetoothd
  [ -x "$bt" ] || bt=/usr/sbin/bluetoothd
  "$bt" -n -d >"$logs/bluetoothd.log" 2>&1 &
  pids+=($!)
  wait_for 20 busctl --system status org.bluez
}

controller_ready() { # the kernel finished setting up hciN (it is a mgmt index)
  btmgmt --index "$1" info 2>&1 | grep -q "addr "
}

powered() {
  btmgmt --index "$1" info 2>&1 | grep -q "current settings: powered"
}

power_on() {
  local i
  for i in 0 1; do
    btmgmt --index "$i" power on >>"$logs/btmgmt.log" 2>&1
    wait_for 10 powered "$i" || { btmgmt --index "$i" info >>"$logs/btmgmt.log" 2>&1; return 1; }
  done
  # The phone's side must accept connections (page scan): a phone does
  # this when its owner makes it visible to the computer.
  btmgmt --index 1 connectable on >>"$logs/btmgmt.log" 2>&1
  wait_for 10 bash -c 'btmgmt --index 1 info | grep -q "current settings:.*connectable"' || return 1
  btmgmt info >>"$logs/btmgmt.log" 2>&1
}

address_of() { # the BD address of hciN
  cat "/sys/class/bluetooth/$1/address" 2>/dev/null ||
    hciconfig "$1" 2>/dev/null | awk '/BD Address/ { print $3 }'
}

handset_serve() {
  PHONECSP_HANDSET_DIR=$work/handset RUST_LOG=info \
    phonecsp-handset serve --rfcomm --adapter hci1 -v >"$logs/handset.log" 2>&1 &
  pids+=($!)
  wait_for 30 grep -q "serving RFCOMM" "$logs/handset.log"
}

daemon_start() {
  local hs_addr
  hs_addr=$(btmgmt --index 1 info | awk '/addr / { print $2; exit }')
  [ -n "$hs_addr" ] || hs_addr=$(address_of hci1)
  echo "handset controller hci1: $hs_addr" >>"$logs/daemon.log"
  # What an administrator writes into the installed configuration.
  cat >/etc/phonecsp/phonecspd.toml <<TOML
[access]
users = ["root"]

[[handset]]
name = "phone"
bluetooth = "$hs_addr"
channel = 3
adapter = "hci0"
TOML
  # As phonecspd.service runs it: its User=, Group=, SupplementaryGroups=,
  # StateDirectory= (0700), no capabilities, no new privileges, its
  # ExecStart= from the installed unit, and systemd's environment.
  local unit=/usr/lib/systemd/system/phonecspd.service exec
  exec=$(sed -n 's/^ExecStart=//p' "$unit")
  install -d -o phonecsp -g phonecsp -m 0700 /var/lib/phonecsp
  setpriv --reuid=phonecsp --regid=phonecsp --groups=dialout \
    --no-new-privs --inh-caps=-all --bounding-set=-all \
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 \
    STATE_DIRECTORY=/var/lib/phonecsp CONFIGURATION_DIRECTORY=/etc/phonecsp \
    $exec -v >>"$logs/daemon.log" 2>&1 &
  pids+=($!)
  # Waits for the name without calling it: a call would have dbus-daemon
  # activate a second phonecspd through the installed activation file.
  wait_for 30 name_owned org.phonecsp.CryptoProvider1
}

name_owned() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner "string:$1" | grep -q "boolean true"
}

pair() {
  timeout 120 phonecsp pair --code "$(cat "$work/pairing-code")" &&
    wait_for 60 bash -c 'timeout 20 phonecsp tokens | grep -q ssh'
}

sign() {
  export PHONECSP_PIN=123456
  printf 'signed in a VM over RFCOMM\n' >/tmp/message.txt
  timeout 120 phonecsp sign ssh --key 01 --in /tmp/message.txt --out /tmp/message.sig &&
    timeout 60 phonecsp verify ssh --key 01 --in /tmp/message.txt --signature /tmp/message.sig &&
    timeout 20 phonecsp status
}

echo "system: kernel $(uname -r), $(nproc) cpus"
step "load hci_vhci, rfcomm" modules
step "scripts/install (real, in the VM)" install_phonecsp
step "system bus with the installed policy" system_bus
step "btvirt -l2: two controllers" controllers
step "bluetoothd" bluetooth_daemon
step "power both controllers" power_on
step "handset: serve --rfcomm on hci1" handset_serve
step "phonecspd as its unit, on hci0" daemon_start
step "pair (phonecsp pair --code)" pair
step "sign and verify (phonecsp sign)" sign
echo "total in the VM: $(elapsed "$t0" "$(date +%s.%N)")s" | tee -a "$work/timings"
echo ok >"$work/result"
if [ -n "${SYSTEM_VERBOSE:-}" ]; then dump_logs; fi
