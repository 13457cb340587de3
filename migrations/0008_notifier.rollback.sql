DROP TABLE push_subscriptions;
DROP TABLE notification_deliveries;
DROP TABLE notifications;
