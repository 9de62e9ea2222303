"""Training, in rooms: ``step`` (one rank's model, optimizer and step), ``state``
(what a checkpoint carries: the loop's position, random states, resume checks),
``validation`` (protocol R/T on the validation targets, merged over ranks),
``report`` (metrics.jsonl, summary.json, curves.png, the progress bar) and
``baselines`` (closed-form models: fitted and tuned, no loop). The loop itself is
``bstrec.train``, the entry point every caller uses."""
