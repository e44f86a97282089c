-- Gateways cache device lookups and credential checks for a short while; when a device is
-- deactivated (or its password, cell or id changes, or it is deleted) they are told at once,
-- so a deactivated device is refused from that moment, not when the cache runs out.
CREATE FUNCTION pingan_device_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pingan_devices', OLD.device_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER devices_changed
    AFTER UPDATE OF active, mqtt_password_hash, grid_code, device_id OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION pingan_device_changed();
