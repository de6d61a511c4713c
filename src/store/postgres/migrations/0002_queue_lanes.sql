-- The queue's lanes (issue 19): a queued notification waits in the lane of the channel its plan
-- tries next ('' for anything else: a receipt check; and every row queued before this version),
-- so the dispatcher claims from a paced channel's lane only what the channel can send now and
-- a paced backlog is left untouched until its turn. One index per lane order replaces the
-- single due order: claims and the next-due read walk it per lane.
ALTER TABLE queue ADD COLUMN lane text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX queue_lane_due ON queue (lane, available_at, id);
DROP INDEX queue_due;
