    primary="@PRIMARY@ @PORT@"
    replica=$(printf '@REPLICAS@' | pick_replica)
