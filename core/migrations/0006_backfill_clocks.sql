-- Incidents opened before escalation existed have no policy and no deadline. Give the open
-- ones an acknowledgement deadline one minute after they opened (so an overdue one escalates
-- now); their policy is the default of their priority (read in code when `policy` is empty).
UPDATE incidents
   SET deadline_at = opened_at + interval '60 seconds',
       due_at = opened_at + interval '60 seconds'
 WHERE closed_at IS NULL AND policy = '{}'::jsonb AND deadline_at IS NULL
   AND status IN ('opened', 'notified');
