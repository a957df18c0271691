#!/bin/bash
# devstack plugin of openstack-gpu-partitions: installs the package into
# the environment Nova and Cyborg run from, enables its Cyborg drivers and
# Nova scheduler plugins, and creates device profiles and flavors for the
# GPU slices the drivers report.
#
# Enable it in local.conf, after cyborg:
#   enable_plugin cyborg https://opendev.org/openstack/cyborg
#   enable_plugin openstack-gpu-partitions <this repository>

XTRACE=$(set +o | grep xtrace)
set -o xtrace

function install_gpu_partitions {
    setup_develop "$GPU_PARTITIONS_DIR"
}

function _gpu_partitions_cyborg_drivers {
    if [[ "$GPU_PARTITIONS_FAKE_HARDWARE" == "True" ]]; then
        echo gpu_partitions_fake_hardware
    else
        echo "$GPU_PARTITIONS_DRIVERS"
    fi
}

function configure_gpu_partitions_cyborg {
    local drivers
    drivers=$(_gpu_partitions_cyborg_drivers)
    iniset "$CYBORG_CONF" agent enabled_drivers "$drivers"
    if [[ "$GPU_PARTITIONS_FAKE_HARDWARE" == "True" ]]; then
        iniset "$CYBORG_CONF" gpu_partitions_fake_hardware reference_host \
            "$GPU_PARTITIONS_FAKE_HOST"
        iniset "$CYBORG_CONF" gpu_partitions_fake_hardware drivers \
            "$GPU_PARTITIONS_DRIVERS"
        iniset "$CYBORG_CONF" gpu_partitions_fake_hardware state_path \
            "$DATA_DIR/gpu-partitions-fake"
    fi
}

# Append a value to a comma-separated list option (oslo.config ListOpt)
# unless it is already there. An option absent from the file starts from
# Nova's own default, read from the installed Nova, so that adding ours
# never drops Nova's filters or weighers.
function _gpu_partitions_list_add {
    local file=$1 section=$2 option=$3 value=$4
    local current
    current=$(iniget "$file" "$section" "$option")
    if [[ -z "$current" ]]; then
        current=$(_gpu_partitions_nova_default "$section" "$option")
    fi
    if [[ ",$current," != *",$value,"* ]]; then
        current="${current:+$current,}$value"
    fi
    iniset "$file" "$section" "$option" "$current"
}

# Add one line to a multi-valued option (oslo.config MultiStrOpt, such as
# [filter_scheduler] available_filters) unless it is already there. A
# comma-joined value would be read by Nova as one class path. An option
# absent from the file starts from Nova's default lines.
function _gpu_partitions_multi_add {
    local file=$1 section=$2 option=$3 value=$4
    local current default
    current=$(iniget_multiline "$file" "$section" "$option")
    if [[ " $current " == *" $value "* ]]; then
        return
    fi
    if [[ -z "$current" ]]; then
        for default in $(_gpu_partitions_nova_default "$section" "$option" \
                | tr ',' ' '); do
            iniadd "$file" "$section" "$option" "$default"
        done
    fi
    iniadd "$file" "$section" "$option" "$value"
}

# Nova's default value of an option, comma-joined, from the installed Nova.
function _gpu_partitions_nova_default {
    "${PYTHON:-python3}" - "$1" "$2" <<'PY'
import sys

from nova.conf import scheduler
from oslo_config import cfg

section, option = sys.argv[1:3]
conf = cfg.ConfigOpts()
scheduler.register_opts(conf)
conf([], default_config_files=[])
value = conf[section][option]
print(','.join(value) if isinstance(value, list) else value)
PY
}

function configure_gpu_partitions_nova {
    local conf
    for conf in "$NOVA_CONF" "$NOVA_CPU_CONF"; do
        [[ -f "$conf" ]] || continue
        _gpu_partitions_multi_add "$conf" filter_scheduler \
            available_filters "$GPU_PARTITIONS_FILTER"
        _gpu_partitions_list_add "$conf" filter_scheduler enabled_filters \
            GpuPartitionFilter
        _gpu_partitions_list_add "$conf" filter_scheduler weight_classes \
            "$GPU_PARTITIONS_WEIGHER"
        iniset "$conf" gpu_partitions_scheduler policy \
            "$GPU_PARTITIONS_POLICY"
        iniset "$conf" gpu_partitions_scheduler link_affinity \
            "$GPU_PARTITIONS_LINK_AFFINITY"
        iniset "$conf" gpu_partitions_scheduler numa_affinity \
            "$GPU_PARTITIONS_NUMA_AFFINITY"
    done
}

# Nova's fake virt driver on the computes of a GPU-less node: the attach
# handles of a reference host (VFs such as 0000:1b:00.4) exist only in the
# recorded data, and libvirt would fail to start a guest with them.
# nova-compute reads nova-cpu.conf, which devstack copies from nova.conf
# when it starts the compute, so both get it.
function configure_gpu_partitions_fake_virt_driver {
    local conf
    for conf in "$NOVA_CONF" "$NOVA_CPU_CONF"; do
        [[ -f "$conf" ]] || continue
        iniset "$conf" DEFAULT compute_driver \
            "$GPU_PARTITIONS_FAKE_VIRT_DRIVER_CLASS"
    done
}

# The GPU resource classes the drivers of this host report, one a line.
function _gpu_partitions_resource_classes {
    local source
    if [[ "$GPU_PARTITIONS_FAKE_HARDWARE" == "True" ]]; then
        source="--fixture $GPU_PARTITIONS_FAKE_HOST"
    else
        source="--config-file $CYBORG_CONF"
    fi
    # shellcheck disable=SC2086
    gpu-partitions inventory $source --format json | python3 -c '
import json, sys
names = {p["resource_class"] for p in json.load(sys.stdin)["providers"]}
print("\n".join(sorted(names)))'
}

function create_gpu_partitions_flavors {
    local rc name
    for rc in $(_gpu_partitions_resource_classes); do
        name=$(echo "${rc#CUSTOM_}" | tr '[:upper:]_' '[:lower:]-')
        if ! openstack accelerator device profile show "$name" \
                >/dev/null 2>&1; then
            openstack accelerator device profile create "$name" \
                "[{\"resources:$rc\": \"1\"}]"
        fi
        if ! openstack flavor show "$name" >/dev/null 2>&1; then
            openstack flavor create --ram "$GPU_PARTITIONS_FLAVOR_RAM" \
                --disk "$GPU_PARTITIONS_FLAVOR_DISK" \
                --vcpus "$GPU_PARTITIONS_FLAVOR_VCPUS" \
                --property "accel:device_profile=$name" "$name"
        fi
    done
}

function configure_gpu_partitions_tempest {
    iniset "$TEMPEST_CONFIG" service_available gpu_partitions True
    iniset "$TEMPEST_CONFIG" gpu_partitions policy "$GPU_PARTITIONS_POLICY"
    iniset "$TEMPEST_CONFIG" gpu_partitions fake_hardware \
        "$GPU_PARTITIONS_FAKE_HARDWARE"
}

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install)
            echo_summary "Installing openstack-gpu-partitions"
            install_gpu_partitions
            ;;
        post-config)
            echo_summary "Configuring openstack-gpu-partitions"
            if is_service_enabled cyborg-agent; then
                configure_gpu_partitions_cyborg
            fi
            if is_service_enabled n-sch; then
                configure_gpu_partitions_nova
            fi
            if [[ "$GPU_PARTITIONS_FAKE_VIRT_DRIVER" == "True" ]] && \
                    is_service_enabled n-cpu; then
                configure_gpu_partitions_fake_virt_driver
            fi
            ;;
        extra)
            if [[ "$GPU_PARTITIONS_CREATE_FLAVORS" == "True" ]] && \
                    is_service_enabled cyborg-api; then
                echo_summary "Creating GPU device profiles and flavors"
                create_gpu_partitions_flavors
            fi
            ;;
        test-config)
            if is_service_enabled tempest; then
                configure_gpu_partitions_tempest
            fi
            ;;
    esac
fi

$XTRACE
