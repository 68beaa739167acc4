#!/usr/bin/env bash
# The system tier's steps inside the VM (run by tests/system/run, as root
# in the guest; / is the host's, with /etc, /usr and /var overlaid so that
# the install stays in the VM). Arguments: the shared work directory (the
# handset's state, prepared on the host, and where logs and timings go) and
# the directory with the built binaries.
#
# Each step is timed; on failure every inner log (daemon, bluetoothd,
# handset, btvirt, dbus, polkitd, kernel) is printed.
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
  if dmesg | grep -q -E 'BUG:|WARNING:|Oops|Call Trace'; then
    echo "----- dmesg (the kernel's complaint) -----"
    dmesg | sed -n '/BUG:\|WARNING:\|Oops\|------------\[ cut here/,$p' | head -n 80
  fi
}

fail() { # fail KIND NAME: KIND is fail (phonecsp) or fail-setup (the test bed)
  local kind=$1; shift
  echo "system: FAILED: $*" >&2
  echo "$kind $*" >"$work/result"
  dump_logs >&2
  exit 1
}

step() { # step NAME COMMAND...: runs and times one step of phonecsp's
  run_step fail "$@"
}

setup() { # setup NAME COMMAND...: one step of the test bed's own setup
  run_step fail-setup "$@"
}

run_step() {
  local kind=$1 name=$2; shift 2
  echo "== $name"
  if ! "$@"; then
    fail "$kind" "$name"
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

polkit_daemon() {
  # The user a rule lets unpair (the install step made /etc/shadow
  # writable; /etc stays in the VM).
  getent passwd pcadmin >/dev/null ||
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin pcadmin || return 1
  # What an administrator writes: yes for that one user, nothing (so the
  # action's defaults) for anyone else.
  cat >/etc/polkit-1/rules.d/50-phonecsp-test.rules <<'JS' || return 1
polkit.addRule(function (action, subject) {
    if (action.id == "org.phonecsp.unpair" && subject.user == "pcadmin") {
        return polkit.Result.YES;
    }
});
JS
  # As polkit.service runs it; it reads the installed actions and the rules.
  /usr/lib/polkit-1/polkitd --no-debug >"$logs/polkitd.log" 2>&1 &
  pids+=($!)
  wait_for 30 name_owned org.freedesktop.PolicyKit1
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

bond() {
  # What the owner does once in the Bluetooth settings of both machines:
  # pair them. phonecsp does not rely on it (Noise authenticates both
  # ends), but Secure Simple Pairing encrypts every RFCOMM link with a
  # link key; a key that only one side keeps (the computer's, made in an
  # unbonded pairing, which the phone forgets when its radio restarts)
  # fails authentication on the next connection. Just Works, no agent.
  local hs_addr pc_addr
  hs_addr=$(address_of_index 1) && pc_addr=$(address_of_index 0) || return 1
  # Pairable (bondable), as the settings panel makes an adapter: without
  # it the pairing is a no-bonding one and neither side keeps the key.
  local i
  for i in 0 1; do
    busctl --system set-property org.bluez "/org/bluez/hci$i" org.bluez.Adapter1 \
      Pairable b true || return 1
  done
  wait_for 10 bash -c 'btmgmt --index 0 info | grep -q "current settings:.*bondable"' &&
    wait_for 10 bash -c 'btmgmt --index 1 info | grep -q "current settings:.*bondable"' ||
    return 1
  timeout 60 btmgmt --index 0 pair -c 3 -t 0 "$hs_addr" >>"$logs/btmgmt.log" 2>&1 || return 1
  wait_for 20 grep -q LinkKey "/var/lib/bluetooth/$pc_addr/$hs_addr/info" &&
    wait_for 20 grep -q LinkKey "/var/lib/bluetooth/$hs_addr/$pc_addr/info"
}

address_of_index() { # the BD address of controller N, as bluetoothd names it
  btmgmt --index "$1" info | awk '/addr / { print $2; exit }'
}


handset_serve() {
  PHONECSP_HANDSET_DIR=$work/handset RUST_LOG=info \
    phonecsp-handset serve --rfcomm --adapter hci1 -v >"$logs/handset.log" 2>&1 &
  pids+=($!)
  wait_for 30 grep -q "serving RFCOMM" "$logs/handset.log" || return 1
  # A pairing code is on offer: the handset made hci1 discoverable.
  wait_for 10 bash -c 'btmgmt --index 1 info | grep -q "current settings:.*discoverable"'
}

daemon_start() {
  local hs_addr
  hs_addr=$(address_of_index 1)
  [ -n "$hs_addr" ] || return 1
  echo "handset controller hci1: $hs_addr" >>"$logs/daemon.log"
  # What an administrator writes into the installed configuration: no
  # channel, so the daemon finds the Serial Port Profile by SDP.
  cat >/etc/phonecsp/phonecspd.toml <<TOML
[access]
users = ["root"]

[[handset]]
name = "phone"
bluetooth = "$hs_addr"
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
    wait_for 60 bash -c 'timeout 20 phonecsp tokens | grep -q ssh' || return 1
  # The offer is used: the handset made hci1 undiscoverable again.
  wait_for 10 bash -c '! btmgmt --index 1 info | grep -q "current settings:.*discoverable"'
}

sign() {
  export PHONECSP_PIN=123456
  printf 'signed in a VM over RFCOMM\n' >/tmp/message.txt
  timeout 120 phonecsp sign ssh --key 01 --in /tmp/message.txt --out /tmp/message.sig &&
    timeout 60 phonecsp verify ssh --key 01 --in /tmp/message.txt --signature /tmp/message.sig &&
    timeout 20 phonecsp status
}


# --- the PKCS#11 module, as an unmodified application uses it ----------------

module=
find_module() {
  module=$(ls /usr/lib/*/pkcs11/libphonecsp_pkcs11.so 2>/dev/null | head -n 1)
  [ -n "$module" ]
}

p11() { timeout 120 pkcs11-tool --module "$module" --token-label ssh "$@"; }

pkcs11_sign() { # pkcs11_sign TAG: sign with pkcs11-tool, verify with openssl
  find_module || return 1
  printf 'signed through PKCS#11 in a VM (%s)\n' "$1" >"/tmp/p11-$1.txt"
  p11 --login --pin 123456 --sign --mechanism SHA256-RSA-PKCS --id 01 \
    -i "/tmp/p11-$1.txt" -o "/tmp/p11-$1.sig" >>"$logs/pkcs11.log" 2>&1 &&
    p11 --read-object --type pubkey --id 01 -o /tmp/p11-pub.der >>"$logs/pkcs11.log" 2>&1 &&
    openssl dgst -sha256 -verify /tmp/p11-pub.der -keyform DER \
      -signature "/tmp/p11-$1.sig" "/tmp/p11-$1.txt" >>"$logs/pkcs11.log" 2>&1
}

pkcs11_first() {
  find_module || return 1
  pkcs11-tool --module "$module" --list-slots >>"$logs/pkcs11.log" 2>&1 &&
    grep -q "token label        : ssh" "$logs/pkcs11.log" &&
    pkcs11_sign before
}

# --- the handset's controller powered off, then on ---------------------------

connected() { # the daemon says the handset is connected (yes) or not (no)
  local want=$1 got
  got=$(timeout 20 phonecsp --json handsets 2>/dev/null | grep -o '"connected": [a-z]*')
  [ "$got" = "\"connected\": $want" ]
}

not_powered() { ! powered "$1"; }

watch_signals() {
  dbus-monitor --system "type='signal',interface='org.phonecsp.CryptoProvider1'" \
    >"$logs/signals.log" 2>&1 &
  pids+=($!)
  sleep 1
}

power_off_handset() {
  watch_signals
  btmgmt --index 1 power off >>"$logs/btmgmt.log" 2>&1 &&
    wait_for 10 not_powered 1 || return 1
  # The daemon reports the handset gone: its signal and its answer.
  wait_for 90 grep -q 'member=HandsetDisconnected' "$logs/signals.log" || {
    echo "no HandsetDisconnected signal" >>"$logs/signals.log"; return 1; }
  wait_for 30 connected false || {
    echo "phonecsp handsets still says connected, or did not answer:" >&2
    timeout 20 phonecsp --json handsets >&2; return 1; }
  # Callers get an error, not a hang: the command line and PKCS#11.
  if timeout 120 phonecsp sign ssh --key 01 --in /tmp/message.txt \
    --out /tmp/away.sig 2>/tmp/away.err; then
    echo "signed with the handset's controller off" >&2; return 1
  fi
  cat /tmp/away.err >>"$logs/pkcs11.log"
  grep -q "not reachable\|away\|removed" /tmp/away.err || {
    echo "unexpected error: $(cat /tmp/away.err)" >&2; return 1; }
  if pkcs11_sign away; then
    echo "pkcs11-tool signed with the handset's controller off" >&2; return 1
  fi
  return 0
}

power_on_handset() {
  btmgmt --index 1 power on >>"$logs/btmgmt.log" 2>&1 &&
    wait_for 10 powered 1 &&
    btmgmt --index 1 connectable on >>"$logs/btmgmt.log" 2>&1 || return 1
  # The daemon reconnects by itself (its back-off is at most 5 s).
  wait_for 90 grep -q 'member=HandsetConnected' "$logs/signals.log" || {
    echo "no HandsetConnected signal" >>"$logs/signals.log"; return 1; }
  wait_for 30 connected true
}

sign_again() {
  timeout 120 phonecsp sign ssh --key 01 --in /tmp/message.txt --out /tmp/again.sig &&
    cmp /tmp/message.sig /tmp/again.sig && # PKCS#1 v1.5 is deterministic
    pkcs11_sign after
}

# --- polkit: a user other than root unpairs as a rule allows -----------------

polkit_unpair() {
  # Another user: polkit's defaults (an administrator's password) and no
  # authentication agent, so polkit says no and the daemon refuses.
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
    timeout 120 dbus-send --system --print-reply --dest=org.phonecsp.CryptoProvider1 \
    /org/phonecsp/CryptoProvider1 org.phonecsp.CryptoProvider1.Unpair string:phone \
    >>"$logs/polkit.log" 2>&1 && { echo "nobody unpaired" >&2; return 1; }
  grep "org.phonecsp.Error.FunctionRejected" "$logs/polkit.log" &&
    grep -q "polkit refused org.phonecsp.unpair" "$logs/polkit.log" || {
    echo "nobody's unpair was not refused by polkit:" >&2; cat "$logs/polkit.log" >&2; return 1; }
  connected true || { echo "refused, yet no longer connected" >&2; return 1; }
  # The rule's user, through the real command.
  setpriv --reuid=pcadmin --regid=pcadmin --clear-groups \
    timeout 120 phonecsp --handset phone unpair --yes >>"$logs/polkit.log" 2>&1 || {
    echo "pcadmin could not unpair:" >&2; cat "$logs/polkit.log" >&2; return 1; }
  grep "forgot the pinned key of phone" "$logs/polkit.log" &&
    timeout 20 phonecsp --json handsets | grep '"fingerprint": ""'
}

# --- a LUKS2 disk on a loop device, unlocked through the keyscript ----------

loopdev=
disk_enroll() {
  modprobe loop && modprobe dm_crypt || return 1
  truncate -s 40M /tmp/disk.img
  loopdev=$(losetup --find --show /tmp/disk.img) || return 1
  echo "$loopdev" >/tmp/loopdev
  head -c 32 /dev/urandom >/tmp/old.key
  # PBKDF2 with few iterations: Argon2's memory-hard default takes minutes
  # under emulation, and this passphrase is the test's, not the product's.
  cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --key-file /tmp/old.key "$loopdev" \
    >>"$logs/luks.log" 2>&1 || return 1
  timeout 120 phonecsp luks enroll "$loopdev" --token disk --key 02 \
    --key-file /tmp/old.key >>"$logs/luks.log" 2>&1 || return 1
  # A file written at enrolment time, through the old passphrase.
  cryptsetup open --key-file /tmp/old.key "$loopdev" enrolment >>"$logs/luks.log" 2>&1 &&
    mkfs.ext4 -q /dev/mapper/enrolment >>"$logs/luks.log" 2>&1 &&
    mkdir -p /tmp/mnt-enrolment && mount /dev/mapper/enrolment /tmp/mnt-enrolment &&
    printf 'written at enrolment, %s\n' "$(date -u)" >/tmp/mnt-enrolment/hello.txt &&
    cp /tmp/mnt-enrolment/hello.txt /tmp/hello.expected &&
    umount /tmp/mnt-enrolment && cryptsetup close enrolment
}

object_api() {
  # Anyone reads the object tree: the installed policy lets them.
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
    timeout 60 busctl --system tree org.phonecsp.CryptoProvider1 >>"$logs/objects.log" 2>&1
  grep -q "/org/phonecsp/handset/phone/ssh/key_01" "$logs/objects.log" || {
    echo "no key object in the tree:" >&2; cat "$logs/objects.log" >&2; return 1; }
  # A Sign without a login: the daemon (as its own user) asks root's agent.
  printf '#!/bin/sh\necho 123456\n' >/tmp/agent-askpass
  chmod 0755 /tmp/agent-askpass
  phonecsp agent --askpass /tmp/agent-askpass >>"$logs/objects.log" 2>&1 &
  local agent=$!
  pids+=("$agent")
  sleep 5
  timeout 120 busctl --system call org.phonecsp.CryptoProvider1 \
    /org/phonecsp/handset/phone/ssh/key_01 org.phonecsp.Key1 Sign 'sa{sv}ay' \
    rsa-pkcs1-sha256 0 3 1 2 3 >>"$logs/objects.log" 2>&1
  local rc=$?
  kill "$agent"
  [ "$rc" -eq 0 ] && grep -q '^ay 256 ' "$logs/objects.log" || {
    echo "no signature through the agent:" >&2; cat "$logs/objects.log" >&2; return 1; }
}

disk_unlock() {
  # What an administrator writes; Debian's cryptdisks_start does the rest:
  # it runs the keyscript and pipes its output to cryptsetup open.
  echo "vmdisk $loopdev luks-token luks,keyscript=/usr/lib/phonecsp/phonecsp-keyscript" \
    >/etc/crypttab
  printf '#!/bin/sh\n# the owner typing the PIN\necho 123456\n' >/tmp/askpass
  chmod 0755 /tmp/askpass
  PHONECSP_ASKPASS=/tmp/askpass timeout 180 cryptdisks_start vmdisk \
    >>"$logs/luks.log" 2>&1 || return 1
  test -b /dev/mapper/vmdisk &&
    cryptsetup status vmdisk >>"$logs/luks.log" 2>&1 &&
    mkdir -p /tmp/mnt-vmdisk && mount /dev/mapper/vmdisk /tmp/mnt-vmdisk &&
    cmp /tmp/hello.expected /tmp/mnt-vmdisk/hello.txt &&
    cat /tmp/mnt-vmdisk/hello.txt >>"$logs/luks.log" &&
    umount /tmp/mnt-vmdisk && cryptsetup close vmdisk
}

echo "system: kernel $(uname -r), $(nproc) cpus"
setup "load hci_vhci, rfcomm" modules
step "scripts/install (real, in the VM)" install_phonecsp
setup "system bus with the installed policy" system_bus
setup "polkitd, with a rule for pcadmin" polkit_daemon
setup "btvirt -l2: two controllers" controllers
setup "bluetoothd" bluetooth_daemon
setup "power both controllers" power_on
setup "bond them (btmgmt pair, Just Works)" bond
step "handset: serve --rfcomm on hci1" handset_serve
step "phonecspd as its unit, on hci0" daemon_start
step "pair (phonecsp pair --code)" pair
step "sign and verify (phonecsp sign)" sign
step "sign with pkcs11-tool, verify with openssl" pkcs11_first
step "handset controller off: reported gone" power_off_handset
step "handset controller on: reconnected" power_on_handset
step "sign again (phonecsp, pkcs11-tool)" sign_again
step "object tree; Key1.Sign through a PIN agent" object_api
step "LUKS2 on a loop device: format, enrol, write" disk_enroll
step "cryptdisks_start via the keyscript, mount" disk_unlock
# Last: it unpairs the handset the steps above use.
step "polkit: pcadmin unpairs, nobody is refused" polkit_unpair
echo "total in the VM: $(elapsed "$t0" "$(date +%s.%N)")s" | tee -a "$work/timings"
echo ok >"$work/result"
if [ -n "${SYSTEM_VERBOSE:-}" ]; then dump_logs; fi
