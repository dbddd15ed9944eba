# The boot-time harness's runs and their verdicts, for the boot-bench
# scenarios of both architectures; L1's /rig/bench.sh, sourced after
# /rig/lib.sh. The scenario sets RUNS and WARMUP (boots per variant),
# MEMORY_MIB, BOOT_TIMEOUT (seconds per boot) and INITRD, then calls
# bench CHECK COUNT HARNESS-ARGS... once per table.

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
    boot-harness --mercury /bin/mercury --initrd "$INITRD" --memory $MEMORY_MIB \
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
