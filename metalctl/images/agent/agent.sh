# metalctl agent: busybox sh, sourced by /init (PID 1) of the discovery image.
# The contract is docs/pxe-provisioning.md ("Kernel command line", "The agent").
#
#   discover: facts JSON -> POST /v1/discovery -> poweroff -f
#   deploy:   GET /v1/deploy (the job) -> stream the image to the disk, verify, read back,
#             seed cloud-init -> POST /v1/deploy/result -> reboot -f (ok) / poweroff -f
#
# Nothing from the network or the command line is ever evaluated: values are checked
# against the characters they may hold and only then used, always quoted.

TRIES=5             # attempts per HTTP call (connection errors, 5xx, timeouts)
HTTP_SECONDS=30     # per attempt; busybox 1.35 `wget -T` segfaults, so `timeout` bounds it
DISCOVER_WATCHDOG=300
# GNU coreutils for the image stream (busybox's copy in small blocks: 7x slower under
# QEMU TCG). Called by path: busybox's ash prefers its own applets to anything on PATH.
GNU=/lib/metalctl/gnu
MAC_RE='[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]'

URL=
TOKEN=
MAC=
MODE=
IFACE=
WATCHDOG=

# Every line carries the seconds since boot, like the kernel's own.
log() {
	local up
	read -r up _ </proc/uptime
	echo "[$up] metalctl-agent: $*"
}

uptime_s() {
	local up
	read -r up _ </proc/uptime
	echo "${up%%.*}"
}

# Neither returns: PID 1 must not go on (or exit) once the machine is told to stop.
power_off() {
	log "powering off"
	sync
	while :; do
		poweroff -f
		sleep 5
	done
}

reboot_now() {
	log "rebooting"
	sync
	while :; do
		reboot -f
		sleep 5
	done
}

# A refusal is final: say so, leave time to read the console, power off (no loop).
give_up() {
	log "$*"
	sleep 10
	power_off
}

# Power off after $1 seconds whatever the agent is doing (a hung step must not keep a
# machine up forever). A new call replaces the previous watchdog.
watchdog() {
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	(
		sleep "$1"
		echo "metalctl-agent: watchdog: still running after $1 s; powering off"
		sync
		poweroff -f
	) &
	WATCHDOG=$!
}

is_number() {
	case "$1" in
	'' | *[!0-9]*) return 1 ;;
	esac
	return 0
}

# --- kernel command line -------------------------------------------------------------

read_cmdline() {
	local word
	set -f # split /proc/cmdline into words without globbing them
	for word in $(cat /proc/cmdline); do
		case "$word" in
		metalctl.url=*) URL=${word#*=} ;;
		metalctl.token=*) TOKEN=${word#*=} ;;
		metalctl.mac=*) MAC=${word#*=} ;;
		metalctl.mode=*) MODE=${word#*=} ;;
		esac
	done
	set +f
	URL=${URL%/}
	case "$URL" in
	http://?*) ;;
	*) give_up "metalctl.url must be http://ADDR:PORT (got '$URL')" ;;
	esac
	case "$URL" in
	*[!A-Za-z0-9._:/-]*) give_up "metalctl.url has characters an address cannot have" ;;
	esac
	case "$TOKEN" in
	'' | *[!A-Za-z0-9_-]*) give_up "metalctl.token is missing or not a token" ;;
	esac
	MAC=$(echo "$MAC" | tr 'A-F-' 'a-f:')
	# shellcheck disable=SC2254
	case "$MAC" in
	$MAC_RE) ;;
	*) give_up "metalctl.mac must be the MAC of the NIC that booted (got '$MAC')" ;;
	esac
	case "$MODE" in
	discover | deploy) ;;
	'') MODE=discover ;;
	*) give_up "metalctl.mode must be discover or deploy (got '$MODE')" ;;
	esac
}

# --- hardware ----------------------------------------------------------------------------

load_modules() {
	local m
	while read -r m; do
		[ -n "$m" ] || continue
		[ -d "/sys/module/$m" ] && continue
		insmod "/lib/modules/$m.ko" 2>/dev/null || log "module $m not loaded (not needed here?)"
	done </lib/metalctl/modules
}

nic_by_mac() {
	local d
	for d in /sys/class/net/*; do
		[ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && echo "${d##*/}" && return 0
	done
	return 1
}

network_up() {
	local i=0
	while ! IFACE=$(nic_by_mac "$MAC"); do
		i=$((i + 1))
		[ $i -gt 20 ] && give_up "no NIC with MAC $MAC appeared (is its driver in the image?)"
		sleep 1
	done
	log "NIC $IFACE has MAC $MAC; asking for an address (DHCP)"
	ip link set lo up
	ip link set "$IFACE" up
	i=0
	while ! timeout 60 udhcpc -i "$IFACE" -s /lib/metalctl/udhcpc.script -n -q -t 8 -T 2 -A 2 >/tmp/udhcpc.log 2>&1; do
		i=$((i + 1))
		[ $i -ge 3 ] && give_up "no DHCP lease on $IFACE: $(tail -n 2 /tmp/udhcpc.log | tr '\n' ' ')"
		log "no DHCP lease on $IFACE yet; trying again"
	done
	log "$(sed -n 's/^lease: //p' /tmp/udhcpc.log | head -n 1)"
}

# Wait (at most $1 s) until the set of block devices stops changing for 2 s: SCSI and
# NVMe probe asynchronously after their modules load.
settle_disks() {
	local before= now i=0 quiet=0
	while [ $i -lt "$1" ]; do
		now=$(ls /sys/block)
		if [ "$now" = "$before" ]; then
			quiet=$((quiet + 1))
			[ $quiet -ge 2 ] && return 0
		else
			quiet=0
		fi
		before=$now
		sleep 1
		i=$((i + 1))
	done
}

# One line of a sysfs file (or of the first of several that exists), cleaned: printable
# ASCII only, no surrounding blanks, at most 256 characters (the facts' limit).
attr() {
	local f
	for f in "$@"; do
		if [ -r "$f" ]; then
			tr -cd ' -~' <"$f" 2>/dev/null | sed 's/^ *//; s/ *$//' | head -c 256
			return 0
		fi
	done
}

disk_serial() {
	local d=/sys/block/$1 s
	s=$(attr "$d/serial" "$d/device/serial")
	if [ -z "$s" ] && [ -r "$d/device/vpd_pg80" ]; then
		# SCSI unit serial number page: 4 header bytes, then the serial.
		s=$(tail -c +5 "$d/device/vpd_pg80" | tr -cd ' -~' | sed 's/^ *//; s/ *$//' | head -c 256)
	fi
	echo "$s"
}

# --- JSON ----------------------------------------------------------------------------------

# A JSON string holding $1 (already printable ASCII): backslash and quote escaped.
jstr() {
	local v=$1
	v=${v//\\/\\\\}
	v=${v//\"/\\\"}
	printf '"%s"' "$v"
}

# ,"key":"value" when value is not empty
jopt() {
	[ -n "$2" ] && printf ',"%s":%s' "$1" "$(jstr "$2")"
	return 0
}

memory_bytes() {
	local block n=0 f state
	# Installed memory: the online memory blocks (MemTotal leaves out what the kernel keeps).
	if [ -r /sys/devices/system/memory/block_size_bytes ]; then
		block=$(cat /sys/devices/system/memory/block_size_bytes)
		for f in /sys/devices/system/memory/memory*/state; do
			[ -r "$f" ] && read -r state <"$f" && [ "$state" = online ] && n=$((n + 1))
		done
		if [ $n -gt 0 ] && [ -n "$block" ]; then
			echo $((0x$block * n))
			return
		fi
	fi
	echo $(($(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) * 1024))
}

facts_json() {
	local d n sep mac link speed count model size rot dmi seen= items=0
	printf '{"nics":['
	sep=
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$(cat "$d/type" 2>/dev/null)" = 1 ] || continue # Ethernet only
		mac=$(attr "$d/address" | tr 'A-F' 'a-f')
		# shellcheck disable=SC2254
		case "$mac" in
		00:00:00:00:00:00) continue ;;
		$MAC_RE) ;;
		*) continue ;;
		esac
		# A MAC once (a bridge or bond shares its port's), 64 NICs at most (the facts' limit).
		case " $seen " in
		*" $mac "*) continue ;;
		esac
		seen="$seen $mac"
		items=$((items + 1))
		[ $items -gt 64 ] && break
		link=false
		[ "$(cat "$d/carrier" 2>/dev/null)" = 1 ] && link=true
		printf '%s{"mac":"%s","name":%s,"link":%s' "$sep" "$mac" "$(jstr "$n")" "$link"
		speed=$(cat "$d/speed" 2>/dev/null)
		is_number "$speed" && [ "$speed" -gt 0 ] && printf ',"speed_mbps":%s' "$speed"
		printf '}'
		sep=,
	done
	count=$(grep -c '^processor' /proc/cpuinfo)
	is_number "$count" && [ "$count" -gt 0 ] || count=1
	model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1 | tr -cd ' -~' | head -c 256)
	printf '],"cpu":{"count":%s,"model":%s},' "$count" "$(jstr "${model:-unknown}")"
	printf '"memory_bytes":%s,"disks":[' "$(memory_bytes)"
	sep=
	items=0
	for d in /sys/block/*; do
		n=${d##*/}
		case "$n" in
		loop* | ram* | sr* | fd* | zram* | nbd*) continue ;;
		esac
		items=$((items + 1))
		[ $items -gt 64 ] && break
		size=$(cat "$d/size" 2>/dev/null)
		is_number "$size" || continue
		printf '%s{"name":%s,"size_bytes":%s' "$sep" "$(jstr "$n")" $((size * 512))
		jopt model "$(attr "$d/device/model")"
		jopt serial "$(disk_serial "$n")"
		jopt wwn "$(attr "$d/wwid" "$d/device/wwid")"
		rot=$(cat "$d/queue/rotational" 2>/dev/null)
		case "$rot" in
		0) printf ',"rotational":false' ;;
		1) printf ',"rotational":true' ;;
		esac
		printf '}'
		sep=,
	done
	dmi=/sys/class/dmi/id
	dmi=$(
		jopt vendor "$(attr $dmi/sys_vendor)"
		jopt product "$(attr $dmi/product_name)"
		jopt serial "$(attr $dmi/product_serial)"
		jopt uuid "$(attr $dmi/product_uuid)"
	)
	printf '],"dmi":{%s},"boot_mode":"%s"}' "${dmi#,}" \
		"$([ -d /sys/firmware/efi ] && echo uefi || echo bios)"
}

# --- HTTP --------------------------------------------------------------------------------

# On a refusal, busybox wget says only the status line: ask once more with nc (the same
# request; a refusal stores nothing) and print what the server said, its reason.
explain() {
	local method=$1 url=$2 body=$3 ctype=$4 hostport path host port
	hostport=${url#http://}
	hostport=${hostport%%/*}
	path=${url#http://"$hostport"}
	host=${hostport%:*}
	port=${hostport##*:}
	[ "$host" = "$hostport" ] && port=80
	{
		printf '%s %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\n' \
			"$method" "${path:-/}" "$hostport" "$TOKEN"
		if [ -n "$body" ]; then
			printf 'Content-Type: %s\r\nContent-Length: %s\r\n' "$ctype" "$(wc -c <"$body")"
		fi
		printf '\r\n'
		[ -n "$body" ] && cat "$body"
	} >/tmp/explain.req
	timeout 10 nc "$host" "$port" </tmp/explain.req >/tmp/explain.resp 2>/dev/null
	log "the server says: $(sed '1,/^\r*$/d' /tmp/explain.resp | tr -cd ' -~' | head -c 600)"
}

# http METHOD URL OUT [BODY CONTENT-TYPE]: 0 done (answer in OUT), 1 refused (4xx, not
# retried), 2 failed TRIES times (connection, timeout, 5xx).
http() {
	local method=$1 url=$2 out=$3 body=$4 ctype=$5 try=1 err
	while :; do
		rm -f "$out"
		if [ "$method" = POST ]; then
			timeout "$HTTP_SECONDS" wget -q -O "$out" --header "Authorization: Bearer $TOKEN" \
				--header "Content-Type: $ctype" --post-file "$body" "$url" 2>/tmp/http.err && return 0
		else
			timeout "$HTTP_SECONDS" wget -q -O "$out" --header "Authorization: Bearer $TOKEN" \
				"$url" 2>/tmp/http.err && return 0
		fi
		err=$(tr -cd ' -~\n' </tmp/http.err | tr '\n' ' ')
		case "$err" in
		*"server returned error: HTTP/1."?" 4"*)
			log "$method ${url#http://*/} refused: ${err#wget: }"
			explain "$method" "$url" "$body" "$ctype"
			return 1
			;;
		esac
		if [ $try -ge $TRIES ]; then
			log "$method ${url#http://*/} failed $try times: ${err:-no answer in $HTTP_SECONDS s}"
			return 2
		fi
		log "$method ${url#http://*/} failed (${err:-no answer in $HTTP_SECONDS s}); retrying in $((try * 2)) s"
		sleep $((try * 2))
		try=$((try + 1))
	done
}

# --- discover ------------------------------------------------------------------------------

discover_main() {
	watchdog "$DISCOVER_WATCHDOG"
	settle_disks 10
	facts_json >/tmp/facts.json
	log "facts: $(wc -c </tmp/facts.json) bytes: $(ls /sys/class/net | tr '\n' ' ')| disks: $(ls /sys/block | tr '\n' ' ')"
	log "POST $URL/v1/discovery"
	if http POST "$URL/v1/discovery" /tmp/reply /tmp/facts.json application/json; then
		log "discovered: $(tr -cd ' -~' </tmp/reply)"
		power_off
	fi
	give_up "discovery not recorded (see above); nothing more to do"
}

# --- deploy --------------------------------------------------------------------------------

J_MACHINE=
J_NODE=
J_DISK=
J_DISK_SIZE=
J_DISK_SERIAL=
J_IMAGE_URL=
J_IMAGE_SHA256=
J_IMAGE_SIZE=
J_IMAGE_COMPRESSION=
J_SEED_URL=
DISK_TOUCHED=
STARTED=0
R_SHA=
R_READBACK=
R_BYTES=

# The job: KEY=VALUE lines; only the keys below, only values of [A-Za-z0-9._:/+=@-].
read_job() {
	local line key value
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%$(printf '\r')}
		[ -n "$line" ] || continue
		key=${line%%=*}
		value=${line#*=}
		[ "$key" = "$line" ] && continue
		case "$value" in
		*[!A-Za-z0-9._:/+=@-]*)
			log "job: the value of $key has characters a job never holds"
			return 1
			;;
		esac
		case "$key" in
		METALCTL_MACHINE) J_MACHINE=$value ;;
		METALCTL_NODE) J_NODE=$value ;;
		METALCTL_DISK) J_DISK=$value ;;
		METALCTL_DISK_SIZE) J_DISK_SIZE=$value ;;
		METALCTL_DISK_SERIAL) J_DISK_SERIAL=$value ;;
		METALCTL_IMAGE_URL) J_IMAGE_URL=$value ;;
		METALCTL_IMAGE_SHA256) J_IMAGE_SHA256=$value ;;
		METALCTL_IMAGE_SIZE) J_IMAGE_SIZE=$value ;;
		METALCTL_IMAGE_COMPRESSION) J_IMAGE_COMPRESSION=$value ;;
		METALCTL_SEED_URL) J_SEED_URL=$value ;;
		esac
	done <"$1"
	case "$J_DISK" in
	'' | *[!a-z0-9]*)
		log "job: METALCTL_DISK '$J_DISK' is not a disk's kernel name"
		return 1
		;;
	esac
	is_number "$J_DISK_SIZE" || { log "job: METALCTL_DISK_SIZE is not a number" && return 1; }
	is_number "$J_IMAGE_SIZE" || { log "job: METALCTL_IMAGE_SIZE is not a number" && return 1; }
	case "$J_IMAGE_SHA256" in
	*[!0-9a-f]* | '') log "job: METALCTL_IMAGE_SHA256 is not hex" && return 1 ;;
	esac
	[ ${#J_IMAGE_SHA256} -eq 64 ] || { log "job: METALCTL_IMAGE_SHA256 is not 64 hex digits" && return 1; }
	case "$J_IMAGE_COMPRESSION" in
	zstd | none) ;;
	*) log "job: METALCTL_IMAGE_COMPRESSION must be zstd or none" && return 1 ;;
	esac
	case "$J_IMAGE_URL" in
	http://?*) ;;
	*) log "job: METALCTL_IMAGE_URL is not an http:// URL" && return 1 ;;
	esac
	case "$J_SEED_URL" in
	http://?*) ;;
	*) log "job: METALCTL_SEED_URL is not an http:// URL" && return 1 ;;
	esac
	return 0
}

progress() {
	printf 'phase=%s\n' "$1" >/tmp/progress.txt
	log "phase: $1"
	http POST "$URL/v1/deploy/progress" /tmp/progress.reply /tmp/progress.txt text/plain ||
		log "phase $1 not recorded by the service (going on)"
}

# The first and the last MiB of the disk (the MBR, both GPT copies): a disk left half
# written must never boot.
wipe_disk() {
	local dev=/dev/$J_DISK sectors
	sectors=$(cat "/sys/block/$J_DISK/size" 2>/dev/null)
	log "wiping the first and last MiB of $dev"
	dd if=/dev/zero of="$dev" bs=512 count=2048 conv=fsync 2>/dev/null
	if is_number "$sectors" && [ "$sectors" -gt 4096 ]; then
		dd if=/dev/zero of="$dev" bs=512 seek=$((sectors - 2048)) count=2048 conv=fsync 2>/dev/null
	fi
	sync
}

# key=value lines of the result; a key with no value is left out.
result_body() {
	local status=$1 message=$2
	printf 'status=%s\n' "$status"
	[ -n "$R_SHA" ] && printf 'sha256=%s\n' "$R_SHA"
	[ -n "$R_READBACK" ] && printf 'readback_sha256=%s\n' "$R_READBACK"
	[ -n "$R_BYTES" ] && printf 'bytes=%s\n' "$R_BYTES"
	printf 'seconds=%s\n' $(($(uptime_s) - STARTED))
	[ -n "$message" ] && printf 'message=%s\n' "$(printf '%s' "$message" | tr -cd ' -~' | head -c 400)"
	return 0
}

fail_deploy() {
	log "deploy failed: $1"
	[ -n "$DISK_TOUCHED" ] && wipe_disk
	result_body failed "$1" >/tmp/result.txt
	http POST "$URL/v1/deploy/result" /tmp/result.reply /tmp/result.txt text/plain &&
		log "reported: $(tr -cd ' -~' </tmp/result.reply)"
	power_off
}

check_disk() {
	local i=0 size serial
	while [ ! -e "/sys/block/$J_DISK" ]; do
		i=$((i + 1))
		[ $i -gt 20 ] && fail_deploy "disk $J_DISK not found (disks: $(ls /sys/block | tr '\n' ' '))"
		sleep 1
	done
	i=0
	while [ ! -b "/dev/$J_DISK" ]; do
		i=$((i + 1))
		[ $i -gt 10 ] && fail_deploy "no device node /dev/$J_DISK"
		sleep 1
	done
	size=$(($(cat "/sys/block/$J_DISK/size") * 512))
	[ "$size" = "$J_DISK_SIZE" ] ||
		fail_deploy "disk $J_DISK has $size bytes, the job says $J_DISK_SIZE: not the disk the job is for"
	if [ -n "$J_DISK_SERIAL" ]; then
		serial=$(disk_serial "$J_DISK")
		[ "$serial" = "$J_DISK_SERIAL" ] ||
			fail_deploy "disk $J_DISK has serial '$serial', the job says '$J_DISK_SERIAL'"
	fi
	[ "$J_IMAGE_SIZE" -le "$size" ] ||
		fail_deploy "the image ($J_IMAGE_SIZE bytes) does not fit on $J_DISK ($size bytes)"
}

# wget | [zstd -dc |] tee FIFO | dd of=/dev/DISK, with sha256sum reading the FIFO. Each
# stage leaves its exit status in a file: a failure anywhere fails the write. dd (GNU, see
# discovery.py) counts the bytes it wrote.
write_image() {
	local dev=/dev/$J_DISK seconds sha_pid st stage
	seconds=$((600 + J_IMAGE_SIZE / 1048576))
	rm -f /tmp/img.fifo /tmp/st.*
	mkfifo /tmp/img.fifo
	"$GNU/sha256sum" </tmp/img.fifo >/tmp/img.sha &
	sha_pid=$!
	DISK_TOUCHED=1
	log "writing $J_IMAGE_SIZE bytes ($J_IMAGE_COMPRESSION) to $dev"
	{
		timeout "$seconds" wget -q -O - --header "Authorization: Bearer $TOKEN" "$J_IMAGE_URL" 2>/tmp/wget.err
		echo $? >/tmp/st.wget
	} | {
		if [ "$J_IMAGE_COMPRESSION" = zstd ]; then
			zstd -dc 2>/tmp/zstd.err
			echo $? >/tmp/st.zstd
		else
			"$GNU/cat"
			echo $? >/tmp/st.cat
		fi
	} | {
		"$GNU/tee" /tmp/img.fifo 2>/tmp/tee.err
		echo $? >/tmp/st.tee
	} | {
		"$GNU/dd" of="$dev" bs=4M 2>/tmp/dd.err
		echo $? >/tmp/st.dd
	}
	wait "$sha_pid"
	for st in /tmp/st.*; do
		stage=${st#/tmp/st.}
		[ "$(cat "$st")" = 0 ] && continue
		fail_deploy "writing the image failed in $stage (exit $(cat "$st")): $(tr -cd ' -~\n' </tmp/"$stage".err 2>/dev/null | tr '\n' ' ' | head -c 200)"
	done
	R_BYTES=$(sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' /tmp/dd.err | head -n 1)
	R_SHA=$(cut -d ' ' -f 1 </tmp/img.sha)
	log "wrote ${R_BYTES:-?} bytes, sha256 $R_SHA"
	[ "$R_BYTES" = "$J_IMAGE_SIZE" ] ||
		fail_deploy "size mismatch: image ${R_BYTES:-?} bytes, expected $J_IMAGE_SIZE"
	[ "$R_SHA" = "$J_IMAGE_SHA256" ] ||
		fail_deploy "sha256 mismatch: image $R_SHA, expected $J_IMAGE_SHA256"
}

read_back() {
	local seconds=$((600 + J_IMAGE_SIZE / 1048576))
	sync
	echo 3 >/proc/sys/vm/drop_caches
	R_READBACK=$(timeout "$seconds" "$GNU/head" -c "$J_IMAGE_SIZE" "/dev/$J_DISK" | "$GNU/sha256sum" | cut -d ' ' -f 1)
	log "read back: sha256 $R_READBACK"
	[ "$R_READBACK" = "$J_IMAGE_SHA256" ] ||
		fail_deploy "sha256 mismatch on read-back: disk $R_READBACK, expected $J_IMAGE_SHA256"
}

# The partition of the disk with an ext4 file system holding /etc/os-release gets the
# cloud-init NoCloud seed (var/lib/cloud/seed/nocloud/, 0600).
seed() {
	local f part found= i=0 p written
	for f in meta-data user-data network-config; do
		http GET "$J_SEED_URL/$f" "/tmp/seed.$f" || fail_deploy "could not fetch the seed file $f"
	done
	blockdev --rereadpt "/dev/$J_DISK" || log "blockdev --rereadpt /dev/$J_DISK failed"
	while [ $i -lt 10 ]; do
		ls -d /sys/block/"$J_DISK"/"$J_DISK"* >/dev/null 2>&1 && break
		sleep 1
		i=$((i + 1))
	done
	sleep 1
	for p in /sys/block/"$J_DISK"/"$J_DISK"*; do
		part=${p##*/}
		[ -b "/dev/$part" ] || continue
		mount -t ext4 "/dev/$part" /mnt 2>/dev/null || continue
		if [ -e /mnt/etc/os-release ] || [ -L /mnt/etc/os-release ]; then
			found=$part
			break
		fi
		umount /mnt
	done
	[ -n "$found" ] || fail_deploy "no ext4 partition with /etc/os-release on $J_DISK"
	log "seeding cloud-init on $found"
	written=0
	if mkdir -p /mnt/var/lib/cloud/seed/nocloud; then
		for f in meta-data user-data network-config; do
			(umask 077 && cp "/tmp/seed.$f" "/mnt/var/lib/cloud/seed/nocloud/$f") &&
				chmod 600 "/mnt/var/lib/cloud/seed/nocloud/$f" && written=$((written + 1))
		done
	fi
	sync
	if [ "$written" != 3 ]; then
		umount /mnt
		fail_deploy "could not write the seed to $found"
	fi
	umount /mnt || fail_deploy "could not unmount $found after seeding"
}

deploy_main() {
	STARTED=$(uptime_s)
	watchdog "$DISCOVER_WATCHDOG"
	log "GET $URL/v1/deploy"
	http GET "$URL/v1/deploy" /tmp/job.txt ||
		give_up "no deploy job for this boot (see above); the disk is untouched"
	read_job /tmp/job.txt || fail_deploy "the deploy job is not usable (see the console); the disk is untouched"
	log "job: machine $J_MACHINE node $J_NODE disk $J_DISK image $J_IMAGE_SIZE bytes ($J_IMAGE_COMPRESSION)"
	# Two full passes over the image at 1 MiB/s at least, and some.
	watchdog $((900 + 2 * (J_IMAGE_SIZE / 1048576)))
	check_disk
	progress writing
	write_image
	progress verifying
	read_back
	progress seeding
	seed
	progress rebooting
	result_body ok >/tmp/result.txt
	if http POST "$URL/v1/deploy/result" /tmp/result.reply /tmp/result.txt text/plain; then
		log "reported: $(tr -cd ' -~' </tmp/result.reply)"
		if grep -q '"failed"' /tmp/result.reply; then
			# The service did not take the result: boot nothing it has not agreed to.
			wipe_disk
			power_off
		fi
	else
		log "the result was not recorded; rebooting anyway (the boot service decides what boots)"
	fi
	reboot_now
}

agent_main() {
	log "starting ($(uname -r))"
	read_cmdline
	log "mode $MODE, boot service $URL, NIC $MAC"
	load_modules
	network_up
	case "$MODE" in
	discover) discover_main ;;
	deploy) deploy_main ;;
	esac
	power_off
}
