#!/bin/sh
# Boot-time benchmark on L1's real (nested) KVM: the static boot-harness
# (benches/) boots the microVM Linux kernel with the test initramfs under
# mercury several times per variant, variants interleaved, and prints its
# table: VMM setup (process start -> first KVM_RUN), kernel (first KVM_RUN
# -> the boot timer the initramfs /init writes first thing) and total, each
# min/median/max, and ratios of medians against the first variant.
#   bench-kernels: vmlinux (PVH entry) and bzImage, 1 and 2 vCPUs, `quiet`;
#   bench-cmdline: vmlinux, 1 vCPU, without and with `quiet`.
# The checks assert only that the measurements were produced (every boot
# counted, the harness exited 0, the medians parsed), never a time: L1 runs
# under TCG; its numbers are recorded in docs/BENCHMARKS.md, not judged here.
# With RIG_COMPARE_WITH=/path/to/firecracker on the host (a static binary),
# it is /bin/compare-vmm here and `compare` boots it and mercury with the
# same vmlinux, initramfs, command line, vCPUs and memory, interleaved; the
# harness prints mercury/other ratios (no bzImage: Firecracker boots only
# ELF kernels on x86_64).
# rig-images: linux-kernel linux-bzimage initramfs
# rig-tools: boot-harness compare-vmm
# rig-timeout: 1200
# rig-expect: bench-kernels bench-cmdline
. /rig/lib.sh

# Counted boots per variant, after WARMUP uncounted ones.
RUNS=10
WARMUP=1
MEMORY_MIB=128
BASE_CMDLINE="console=ttyS0 reboot=k panic=1 mercury.action=reboot"
# Limit for one boot (they take ~1-5 s in L1).
BOOT_TIMEOUT=120

# summary FILE: one line per variant of a harness table, e.g.
#   mercury variant=1vcpu,linux-kernel ok=10 runs=10 setup_ms=.. setup_cpu_ms=.. kernel_ms=.. total_ms=..
# (medians; a metric the table lacks is absent).
summary() {
    awk '
        function flush() {
            if (vmm != "") print vmm " variant=" id " ok=" ok " runs=" runs line
            vmm = ""
        }
        # "== mercury, 1 vCPU, 128 MiB, linux-kernel, cmdline 2 (10/10 ok)"
        /^== (mercury|firecracker), / {
            flush()
            s = substr($0, 4)
            i = index(s, " (")
            split(substr(s, i + 2), n, "[/ ]")
            ok = n[1]; runs = n[2]
            k = split(substr(s, 1, i - 1), part, ", ")
            vmm = part[1]
            id = part[2]
            sub(/ vCPUs?$/, "vcpu", id)
            for (j = 4; j <= k; j++) id = id "," part[j]
            gsub(/ /, "-", id)
            line = ""
            next
        }
        /^== / { flush(); next }
        vmm != "" && /^  VMM setup, wall / { line = line " setup_ms=" $(NF - 1) }
        vmm != "" && /^  VMM setup, CPU / { line = line " setup_cpu_ms=" $(NF - 1) }
        vmm != "" && /^  kernel \(/ { line = line " kernel_ms=" $(NF - 1) }
        vmm != "" && /^  total \(/ { line = line " total_ms=" $(NF - 1) }
        END { flush() }
    ' "$1"
}

# word LINE KEY: the value of KEY=value in LINE.
word() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# variants_ok FILE VMM COUNT FIELD...: the table has COUNT variants of VMM,
# each with all RUNS boots counted and a median for every FIELD. Prints the
# medians ("1vcpu,linux-kernel total_ms=..; ...") or what is wrong.
variants_ok() {
    local file=$1 vmm=$2 count=$3 lines found problem= detail= line id field value
    shift 3
    lines=$(summary "$file" | grep "^$vmm ")
    found=$(echo "$lines" | grep -c .)
    [ "$found" -eq "$count" ] || problem="; $found $vmm variants in the table, want $count"
    while read -r line; do
        [ -n "$line" ] || continue
        id=$(word "$line" variant)
        detail="$detail $id"
        if [ "$(word "$line" ok)/$(word "$line" runs)" != "$RUNS/$RUNS" ]; then
            problem="$problem; $vmm $id: $(word "$line" ok) of $(word "$line" runs) boots ok, want $RUNS of $RUNS"
        fi
        for field in "$@"; do
            value=$(word "$line" "$field")
            if echo "$value" | grep -q -E '^[0-9]+\.[0-9]+$'; then
                detail="$detail $field=$value"
            else
                problem="$problem; $vmm $id: no median $field"
            fi
        done
        detail="$detail;"
    done <<EOF
$lines
EOF
    if [ -z "$problem" ]; then
        echo "$detail"
        return 0
    fi
    echo "${problem#; }"
    return 1
}

# bench CHECK COUNT HARNESS-ARGS...: runs the harness on mercury's COUNT
# variants (its per-boot progress goes to the console on stderr), prints
# its table and one verdict on mercury's variants. Leaves the table in $out
# and the status in $rc. With --compare-with, status 1 (some boot failed)
# is left to the comparison VMM's own check when mercury's boots all counted.
bench() {
    local check=$1 count=$2 t0 secs result ok_rc=0
    shift 2
    case " $* " in *" --compare-with "*) ok_rc=1 ;; esac
    out=/tmp/$check.txt
    echo "rig: $check: boot-harness $*"
    t0=$(rig_now)
    boot-harness --mercury /bin/mercury --initrd /images/initramfs --memory $MEMORY_MIB \
        --runs $RUNS --warmup $WARMUP --timeout $BOOT_TIMEOUT "$@" >"$out"
    rc=$?
    secs=$(rig_since "$t0")
    echo "rig: $check: boot-harness exited $rc after $secs s; its table:"
    cat "$out"
    if result=$(variants_ok "$out" mercury "$count" setup_ms setup_cpu_ms kernel_ms total_ms) &&
        [ $rc -le $ok_rc ]; then
        rig_pass "$check" "rc=$rc runs=$RUNS secs=$secs medians:$result"
    else
        rig_fail "$check" "rc=$rc (want 0); $result"
    fi
}

bench bench-kernels 4 --kernel /images/linux-kernel --kernel /images/linux-bzimage \
    --vcpus 1,2 --cmdline "$BASE_CMDLINE quiet"
bench bench-cmdline 2 --kernel /images/linux-kernel --vcpus 1 \
    --cmdline "$BASE_CMDLINE" --cmdline "$BASE_CMDLINE quiet"

if [ -x /bin/compare-vmm ]; then
    bench compare 2 --kernel /images/linux-kernel --vcpus 1,2 --cmdline "$BASE_CMDLINE quiet" \
        --compare-with /bin/compare-vmm
    # The other VMM's boots, and the mercury/other ratios.
    if result=$(variants_ok "$out" firecracker 2 total_ms) && [ $rc -eq 0 ] &&
        grep -q '/  firecracker, ' "$out"; then
        rig_pass compare-vmm "$(compare-vmm --version 2>&1 | head -n 1 | cut -c 1-60) medians:$result"
    else
        rig_fail compare-vmm "rc=$rc; $result; mercury/other ratio rows: $(grep -c '/  firecracker, ' "$out")"
    fi
fi
exit 0
