/*
 * kvm-probe (aarch64): runs one tiny VM on /dev/kvm without mercury, to
 * prove that an aarch64 L1's KVM works before any VMM is blamed. Built by
 * the rig (`# rig-tools: kvm-probe`) with `aarch64-linux-gnu-gcc -static`
 * and installed in L1 as /bin/kvm-probe.
 *
 * The VM: 2 MiB of RAM at 0x40000000, an in-kernel vGICv3 (distributor
 * 0x08000000, redistributors 0x080a0000), one vCPU with PSCI 0.2. Its code
 * stores the bytes of a message one by one to 0x09000000, where nothing is
 * mapped (each store comes back as KVM_EXIT_MMIO), then calls PSCI
 * SYSTEM_OFF through `hvc #0` (KVM_EXIT_SYSTEM_EVENT, SHUTDOWN).
 *
 * Prints one line, `kvm-probe: PASS|FAIL key=value...`, and exits 0 only
 * when the VM did exactly that: every MMIO exit a 1-byte write at
 * 0x09000000, the bytes equal to the message, then the shutdown event.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_BASE 0x40000000ULL
#define RAM_SIZE (2ULL << 20)
#define GICD_BASE 0x08000000ULL
#define GICR_BASE 0x080a0000ULL
#define UART_ADDR 0x09000000ULL
/* At most this many exits: the message is 16 bytes. */
#define MAX_EXITS 64

static const char MESSAGE[] = "kvm-probe guest\n";

/*
 * The guest, assembled with aarch64-linux-gnu-as (source in the comments);
 * the message follows the code at offset 0x28.
 */
static const uint32_t GUEST_CODE[] = {
    0x10000143, /*     adr   x3, msg               (pc + 0x28) */
    0xd2a12001, /*     movz  x1, #0x0900, lsl #16  (x1 = 0x09000000) */
    0x38401462, /* 1:  ldrb  w2, [x3], #1 */
    0x34000062, /*     cbz   w2, 2f */
    0x39000022, /*     strb  w2, [x1]              (an MMIO exit) */
    0x17fffffd, /*     b     1b */
    0x52800100, /* 2:  movz  w0, #0x0008 */
    0x72b08000, /*     movk  w0, #0x8400, lsl #16  (PSCI SYSTEM_OFF) */
    0xd4000002, /*     hvc   #0 */
    0x14000000, /* 3:  b     3b */
};
#define MESSAGE_OFFSET 0x28

static void fail(const char *what, int err)
{
    printf("kvm-probe: FAIL %s: %s\n", what, strerror(err));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_gic_attr(int gic, uint32_t group, uint64_t attr, void *value, const char *what)
{
    struct kvm_device_attr a = {
        .group = group,
        .attr = attr,
        .addr = (uint64_t)(uintptr_t)value,
    };
    if (ioctl(gic, KVM_SET_DEVICE_ATTR, &a) < 0)
        fail(what, errno);
}

int main(void)
{
    double start = now();
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        fail("open /dev/kvm", errno);
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        printf("kvm-probe: FAIL KVM_GET_API_VERSION=%d, want %d\n", api, KVM_API_VERSION);
        return 1;
    }
    int ipa_bits = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_VM_IPA_SIZE);
    int psci = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_PSCI_0_2);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0); /* type 0: the default 40-bit IPA */
    if (vm < 0)
        fail("KVM_CREATE_VM", errno);

    void *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED)
        fail("mmap guest RAM", errno);
    memcpy(ram, GUEST_CODE, sizeof(GUEST_CODE));
    memcpy((char *)ram + MESSAGE_OFFSET, MESSAGE, sizeof(MESSAGE));
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = RAM_BASE,
        .memory_size = RAM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)ram,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        fail("KVM_SET_USER_MEMORY_REGION", errno);

    struct kvm_create_device gic_dev = {.type = KVM_DEV_TYPE_ARM_VGIC_V3};
    if (ioctl(vm, KVM_CREATE_DEVICE, &gic_dev) < 0)
        fail("KVM_CREATE_DEVICE vGICv3", errno);
    int gic = gic_dev.fd;
    uint64_t gicd = GICD_BASE, gicr = GICR_BASE;
    set_gic_attr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, &gicd,
                 "vGICv3 distributor address");
    set_gic_attr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, &gicr,
                 "vGICv3 redistributor address");

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        fail("KVM_CREATE_VCPU", errno);
    struct kvm_vcpu_init init;
    memset(&init, 0, sizeof(init));
    if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0)
        fail("KVM_ARM_PREFERRED_TARGET", errno);
    init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
    if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0)
        fail("KVM_ARM_VCPU_INIT", errno);
    /* After KVM_ARM_VCPU_INIT: EL1h, interrupts masked; only the PC is set. */
    uint64_t pc = RAM_BASE;
    struct kvm_one_reg reg = {
        .id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
              (offsetof(struct kvm_regs, regs.pc) / sizeof(uint32_t)),
        .addr = (uint64_t)(uintptr_t)&pc,
    };
    if (ioctl(vcpu, KVM_SET_ONE_REG, &reg) < 0)
        fail("KVM_SET_ONE_REG pc", errno);

    /* The SPIs, then CTRL_INIT: after the vCPUs exist, before the first run. */
    uint32_t nr_irqs = 128;
    set_gic_attr(gic, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr_irqs, "vGICv3 NR_IRQS");
    set_gic_attr(gic, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, NULL,
                 "vGICv3 CTRL_INIT");

    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0)
        fail("KVM_GET_VCPU_MMAP_SIZE", errno);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        fail("mmap kvm_run", errno);

    char seen[MAX_EXITS + 1];
    size_t nseen = 0;
    int mmio_exits = 0, bad_mmio = 0, shutdown = 0;
    const char *last = "none";
    /* A guest that loops forever is caught by `timeout` in the scenario. */
    for (int exits = 0; exits < MAX_EXITS && !shutdown; exits++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fail("KVM_RUN", errno);
        }
        switch (run->exit_reason) {
        case KVM_EXIT_MMIO:
            mmio_exits++;
            last = "mmio";
            if (run->mmio.is_write && run->mmio.phys_addr == UART_ADDR && run->mmio.len == 1)
                seen[nseen++] = (char)run->mmio.data[0];
            else
                bad_mmio++;
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            last = "system-event";
            if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
                shutdown = 1;
            else
                printf("kvm-probe: system event type %u (want SHUTDOWN %u)\n",
                       run->system_event.type, KVM_SYSTEM_EVENT_SHUTDOWN);
            break;
        default:
            printf("kvm-probe: unexpected exit reason %u\n", run->exit_reason);
            last = "other";
            exits = MAX_EXITS;
            break;
        }
    }
    seen[nseen] = '\0';
    int message_ok = nseen == strlen(MESSAGE) && memcmp(seen, MESSAGE, nseen) == 0;
    int pass = message_ok && shutdown && bad_mmio == 0;
    /* The message without its newline, for a one-line report. */
    if (nseen > 0 && seen[nseen - 1] == '\n')
        seen[nseen - 1] = '\0';
    printf("kvm-probe: %s api=%d ipa_bits=%d psci_0_2=%d vgic=v3 mmio_exits=%d bad_mmio=%d "
           "guest_said=\"%s\" shutdown=%d last_exit=%s secs=%.3f\n",
           pass ? "PASS" : "FAIL", api, ipa_bits, psci, mmio_exits, bad_mmio, seen, shutdown, last,
           now() - start);
    return pass ? 0 : 1;
}
