-- A local monitoring script in lua-collectd-monitor's format (what its LocalMonitorConfigDir
-- holds), doing what its shipped example does: run `hello`/`exec` when free memory is under
-- 10 GB, and also when it is over (so either way one handler fires), and on any failure
-- notification. medic runs it unchanged in the lcm-lua rule.

local TEN_GB = 10 * 1000 * 1000 * 1000

local function is_free_memory(metric)
   return metric.plugin == "memory" and metric.type_instance == "free"
end

local metric_handlers = {
   memory_free_is_under_10GB = function(metric)
      if is_free_memory(metric) and metric.values[1] <= TEN_GB then
         return { service = "hello", command = "exec" }
      end
      return nil
   end,

   memory_free_is_over_10GB = function(metric)
      if is_free_memory(metric) and metric.values[1] > TEN_GB then
         return { service = "hello", command = "exec" }
      end
   end,
}

local notification_handlers = {
   failure = function(notification)
      if notification.severity == NOTIF_FAILURE then
         collectd.log_info(string.format("failure from %s: %s", notification.plugin,
                                         notification.message))
         return { service = "hello", command = "exec" }
      end
   end,
}

return metric_handlers, notification_handlers
