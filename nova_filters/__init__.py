"""Nova scheduler filters, weighers and flavor extra-spec validators that
pack or spread GPU slices and keep multi-GPU requests inside one NVLink
clique or xGMI hive."""
