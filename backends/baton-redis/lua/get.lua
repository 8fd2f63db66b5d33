-- A job by id, or nil. ARGV: J, origin, events channel, wake channel, id.
return job_view(ARGV[1], ARGV[5])
