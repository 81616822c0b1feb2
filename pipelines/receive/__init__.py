"""The receiving node (`radretrieve listen`): a C-STORE SCP (pynetdicom) that spools pushed instances durably
(`spool`), bounds what a sender may do (`scp`), and indexes settled studies in micro-batches (`node`)."""
