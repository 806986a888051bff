# QEMU: a qcow2 for local clouds and for the boot test. TCG (software emulation) works
# everywhere; on a host with working KVM set qemu_accelerator = "kvm" in your own var
# file (several times faster). /dev/kvm existing is no proof: on nested-virtualisation
# hosts without VMX the guest hangs under KVM, so nothing here guesses.
qemu_accelerator = "tcg"
qemu_memory      = 1024
qemu_cpus        = 2
